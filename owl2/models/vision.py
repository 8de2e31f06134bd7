"""The CLIP ViT-L/14 vision encoder (paper section 3.1; official `visual_encoder.py`, `MplugOwlVisionModel`).

mPLUG-Owl2 uses CLIP's ViT unchanged except that the final LayerNorm is applied to every token, not
only the class token, and all tokens (class token first) go on to the abstractor. That is timm's
`VisionTransformer` in its CLIP form: pre-norm, QuickGELU, a class token, no patch-embedding bias.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import initialization as init

from owl2.config import Owl2VisionConfig


class ClipVisionTransformer(VisionTransformer):
    """timm's ViT in CLIP form, returning all tokens after the final LayerNorm.

    Parameter names are timm's (`cls_token`, `pos_embed`, `patch_embed.proj`, `norm_pre`, `blocks.{i}.*`,
    `norm`); `owl2.checkpoint` maps them to and from CLIP's and the official release's names.
    """

    def __init__(self, config: Owl2VisionConfig):
        if config.intermediate_size % config.hidden_size:
            raise ValueError(
                f"vision_config.intermediate_size ({config.intermediate_size}) must be a multiple of "
                f"hidden_size ({config.hidden_size}) for timm's Mlp"
            )
        super().__init__(
            img_size=config.image_size,
            patch_size=config.patch_size,
            in_chans=config.num_channels,
            num_classes=0,
            global_pool="",
            embed_dim=config.hidden_size,
            depth=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            mlp_ratio=config.intermediate_size / config.hidden_size,
            qkv_bias=True,
            class_token=True,
            pre_norm=True,  # CLIP's `ln_pre`; timm then drops the patch-embedding bias, as CLIP has none
            final_norm=True,
            norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
            act_layer=config.hidden_act,
        )

    @property
    def grid_size(self) -> int:
        return self.patch_embed.grid_size[0]

    def init_free_parameters(self) -> None:
        """timm's initialisation of the parameters outside any layer: position table N(0, 0.02) truncated at
        +-2, class token N(0, 1e-6). A model's `_init_weights` calls this (CLIP usually comes pretrained;
        transformers' init functions skip tensors already loaded)."""
        init.trunc_normal_(self.pos_embed, std=0.02)
        init.normal_(self.cls_token, std=1e-6)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(N, 3, H, W)` images -> `(N, 1 + grid**2, width)` tokens, class token first."""
        return self.forward_features(pixel_values)

    def set_image_size(self, image_size: int) -> None:
        """Change the input resolution, resampling the position table (bicubic over the patch grid).

        mPLUG-Owl2 pre-trains at 224 px and instruction-tunes at 448 px; the class token's row is kept.
        """
        self.set_input_size(img_size=image_size)
