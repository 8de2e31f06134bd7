"""OneLLM's universal encoder (paper section 3.1; official `onellm.py`, `encode_image` and `clip_encode_image`).

One CLIP ViT (frozen in the release) encodes every modality:

    image            (N, 3, H, W)     CLIP's patch embedding and position table
    video            (N, T, 3, H, W)  each frame as an image; CLIP's outputs averaged over the T frames
    rgbd, rgbn       (N, 2, 3, H, W)  the RGB image and its depth / normal map, as a 2-frame video
    audio, point,    (see each         the modality's tokenizer, CLIP's class token prepended, the
    imu, fmri         tokenizer)       modality's OWN learned position table, then CLIP's pre-norm and blocks

and CLIP's final LayerNorm is applied to every token, class token included (the release's `ln_post` on
`x[:, :, :]`); CLIP's output projection is not applied. Output `(N, 1 + tokens, clip_width)`.

Nothing is resampled: each tokenized modality has a fixed number of tokens, sized from
`OneLLMTokenizerConfig.num_tokens`, and its position table has that many rows plus one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models import checkpoint_seq
from torch import nn
from transformers import initialization as init

from owl2.config import OneLLMTokenizerConfig, Owl2VisionConfig, check_onellm_modalities
from owl2.constants import ONELLM_PIXEL_MODALITIES
from owl2.models.modality.audio import AudioTokenizer
from owl2.models.modality.fmri import FmriTokenizer
from owl2.models.modality.imu import ImuTokenizer
from owl2.models.modality.point import PointTokenizer
from owl2.models.modality.shapes import check_shape
from owl2.models.vision import ClipVisionTransformer

TOKENIZERS: dict[str, type[nn.Module]] = {
    "audio": AudioTokenizer,
    "point": PointTokenizer,
    "imu": ImuTokenizer,
    "fmri": FmriTokenizer,
}
"""The tokenizer of every modality that does not enter CLIP through its patch embedding."""


class UniversalEncoder(nn.Module):
    """CLIP ViT over every modality in `modalities`: `forward(inputs, modality)` -> `(N, 1 + tokens, width)`.

    Parameters: `clip.*` (timm's names, see `ClipVisionTransformer`), `tokenizers.{m}.proj.*` and
    `pos_embeds.{m}` `(1 + tokens, width)` for each tokenized modality. `owl2.models.upm` documents how
    the release's keys map to these.
    """

    def __init__(
        self, vision_config: Owl2VisionConfig, tokenizer_config: OneLLMTokenizerConfig, modalities: Sequence[str]
    ):
        super().__init__()
        self.modalities = check_onellm_modalities(modalities)
        self.tokenizer_config = tokenizer_config
        self.clip = ClipVisionTransformer(vision_config)
        width = vision_config.hidden_size
        tokenized = [m for m in self.modalities if m not in ONELLM_PIXEL_MODALITIES]
        self.tokenizers = nn.ModuleDict({m: TOKENIZERS[m](tokenizer_config, width) for m in tokenized})
        self.pos_embeds = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(1 + tokenizer_config.num_tokens(m), width)) for m in tokenized}
        )
        self.init_free_parameters()

    def init_free_parameters(self) -> None:
        """The release's initialisation of the parameters outside CLIP's and the tokenizers' own layers.

        Each tokenized modality's position table is drawn from N(0, 0.02). (The tokenizers' layers keep
        PyTorch's default initialisation in the release, and CLIP comes pretrained.) A model's
        `_init_weights` calls this; transformers' init functions skip tensors already loaded.
        """
        for table in self.pos_embeds.values():
            init.normal_(table, mean=0.0, std=0.02)

    @property
    def width(self) -> int:
        return self.clip.embed_dim

    def num_tokens(self, modality: str) -> int:
        """Tokens `forward` returns per input of `modality`, CLIP's class token included."""
        return 1 + self.tokenizer_config.num_tokens(modality, self.clip.grid_size)

    def forward(self, inputs: torch.Tensor, modality: str) -> torch.Tensor:
        """Encode a batch of one modality; see the module docstring for the input shapes.

        Returns:
            `(N, 1 + tokens, width)`: CLIP's last layer after its final LayerNorm, class token first.
        """
        if modality not in self.modalities:
            raise ValueError(f"this encoder was built for {self.modalities}, not {modality!r}")
        if modality in ONELLM_PIXEL_MODALITIES:
            return self._encode_frames(inputs, modality)
        tokens = self.tokenizers[modality](inputs).to(self.clip.cls_token.dtype)  # (N, L, D)
        return self._encode_tokens(tokens, self.pos_embeds[modality])

    def _encode_frames(self, pixels: torch.Tensor, modality: str) -> torch.Tensor:
        height, width = self.clip.patch_embed.img_size
        channels = self.clip.patch_embed.proj.in_channels
        pixels = pixels.to(self.clip.patch_embed.proj.weight.dtype)
        if modality == "image":
            check_shape(modality, pixels, ("N", channels, height, width), "(batch, channels, height, width)")
            return self.clip(pixels)
        config = self.tokenizer_config
        frames = config.video_num_frames if modality == "video" else config.rgbx_num_frames
        expected = ("N", frames, channels, height, width)
        check_shape(modality, pixels, expected, "(batch, frames, channels, height, width)")
        n = pixels.shape[0]
        tokens = self.clip(pixels.flatten(0, 1))  # (N * T, 1 + g*g, D)
        return tokens.view(n, frames, *tokens.shape[1:]).mean(dim=1)  # (N, 1 + g*g, D), averaged after CLIP

    def _encode_tokens(self, tokens: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """timm's `forward_features` after the patch embedding, with `pos_embed` for CLIP's own table."""
        clip = self.clip
        x = torch.cat([clip.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (N, 1 + L, D)
        x = clip.norm_pre(x + pos_embed.to(x.dtype))
        if clip.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(clip.blocks, x)
        else:
            x = clip.blocks(x)
        return clip.norm(x)
