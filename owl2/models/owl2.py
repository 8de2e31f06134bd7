"""mPLUG-Owl2 end to end (paper section 3; official `modeling_mplug_owl2.py`).

images -> ViT -> abstractor -> `num_queries + 1` tokens per image, spliced into the text where
`input_ids` hold the image placeholder -> modality-adaptive LLaMA-2 -> logits and loss.

The splice, positions, padding, cache and generation plumbing are `owl2.models.multimodal`'s, shared with
OneLLM; what is mPLUG-Owl2's own is here: the image encoder, and the decoder's routing of image tokens to
their own K/V projections and norms.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.utils.deprecation import deprecate_kwarg

from owl2.config import Owl2AbstractorConfig, Owl2Config, Owl2VisionConfig
from owl2.constants import MODALITIES
from owl2.models.abstractor import VisualAbstractor
from owl2.models.decoder import ModalityAdaptiveLlamaModel, ModalityRouting
from owl2.models.multimodal import (
    MergedInputs,
    ModalityTokens,
    MultimodalCausalLMOutput,
    MultimodalGenerationMixin,
    MultimodalPreTrainedModel,
    splice_modality_tokens,
)
from owl2.models.vision import ClipVisionTransformer

TEXT, IMAGE = MODALITIES.index("text"), MODALITIES.index("image")

Owl2CausalLMOutput = MultimodalCausalLMOutput
"""`CausalLMOutputWithPast` plus `attention_mask`, the mask of the expanded sequence (shared with OneLLM)."""


class Owl2PreTrainedModel(MultimodalPreTrainedModel):
    config_class = Owl2Config
    base_model_prefix = "owl2"
    input_modalities = ("image", "text")
    _no_split_modules = ["ModalityAdaptiveDecoderLayer", "AbstractorLayer", "Block"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """LLaMA's init plus the official free parameters.

        Every linear and embedding, ViT and abstractor included, is drawn from normal(0, std) with
        std the text config's `initializer_range` (transformers' rule for composite models): 0.02 in
        the released model, whose widths are 1,024-4,096. The toy preset, 64-128 wide, uses 0.08
        (about 1/sqrt(width)); at 0.02 its image tokens barely depend on the image at the start
        (plain-loop runs of the demo's stage 2: held-out accuracy 0.46 against 0.60 after 1,500 steps).
        """
        super()._init_weights(module)
        if isinstance(module, VisualAbstractor):
            # The official abstractor draws its queries and end-of-image embedding from N(0, 1).
            init.normal_(module.query_embeds, mean=0.0, std=1.0)
            init.normal_(module.eos_embed, mean=0.0, std=1.0)
        elif isinstance(module, ClipVisionTransformer):
            module.init_free_parameters()


class Owl2Model(Owl2PreTrainedModel, MultimodalGenerationMixin):
    """mPLUG-Owl2 as a transformers causal LM.

    `input_ids` hold `config.image_token_index` once per image; `pixel_values` are the images
    `(total_images, 3, H, W)` in order of appearance across the batch (row-major). Each placeholder
    becomes that image's `num_queries + 1` tokens and the returned logits cover that expanded sequence.
    """

    modality_inputs_name = "pixel_values"

    def __init__(self, config: Owl2Config):
        super().__init__(config)
        text = config.text_config
        self.vision_model = ClipVisionTransformer(config.vision_config)
        self.abstractor = VisualAbstractor(config.abstractor_config, text.hidden_size)
        self.language_model = ModalityAdaptiveLlamaModel(text)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()

    # -- transformers plumbing ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, plus local folders of the official release (converted on load)."""
        from owl2.checkpoint.convert import is_official_folder, load_official_model  # checkpoint imports models

        if not args and is_official_folder(pretrained_model_name_or_path):
            return load_official_model(pretrained_model_name_or_path, model_class=cls, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        self.vision_model.set_grad_checkpointing(enable)  # timm's own flag, which transformers does not know

    def set_image_size(self, image_size: int) -> None:
        """Change the input resolution (e.g. 224 -> 448 between stages), resampling the ViT position table."""
        self.vision_model.set_image_size(image_size)
        self.config.vision_config.image_size = image_size

    # -- images ------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(N, 3, H, W)` -> `(N, num_queries + 1, text_hidden)` LLM tokens."""
        expected = self.config.vision_config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (self.config.vision_config.num_channels, expected, expected):
            raise ValueError(
                f"pixel_values must be (num_images, {self.config.vision_config.num_channels}, {expected}, {expected}), "
                f"got {tuple(pixel_values.shape)}"
            )
        image_tokens = self.vision_model(pixel_values.to(self.vision_model.cls_token.dtype))
        return self.abstractor(image_tokens)

    def merge_image_tokens(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        image_features: torch.Tensor,
        padding_side: Literal["left", "right"] = "right",
    ) -> MergedInputs:
        """Splice each image's tokens in place of its placeholder (`owl2.models.multimodal.splice_modality_tokens`).

        Rows grow by `num_image_tokens - 1` per image; rows that end up shorter than the longest are
        padded on `padding_side` (mask 0, labelled IGNORE_INDEX). Image tokens take their
        placeholder's mask value (1, or its segment id in a packed row), are never supervised and
        have modality IMAGE.
        """
        images, embed = [self._image_tokens(image_features)], self.get_input_embeddings()
        return splice_modality_tokens(input_ids, embed, attention_mask, labels, images, padding_side)

    def _image_tokens(self, image_features: torch.Tensor) -> ModalityTokens:
        return ModalityTokens(
            name="image",
            placeholder=self.config.image_token_index,
            modality_id=IMAGE,
            embeds=image_features,
            inputs="images",
            source="pixel_values",
        )

    # -- the hooks of MultimodalPreTrainedModel ----------------------------------------------------
    def placeholder_ids(self) -> dict[str, int]:
        return {"image": self.config.image_token_index}

    def tokens_per_input(self) -> dict[str, int]:
        return {"image": self.config.num_image_tokens}

    def embed_modality_inputs(self, pixel_values: torch.Tensor) -> list[ModalityTokens]:
        return [self._image_tokens(self.encode_images(pixel_values))]

    def decoder_kwargs(self, inputs_embeds: torch.Tensor, modality_ids: torch.Tensor | None) -> dict:
        if modality_ids is None:
            routing = ModalityRouting.uniform(inputs_embeds.shape[:2], TEXT, inputs_embeds.device)
        else:
            routing = ModalityRouting.from_ids(modality_ids)
        return {"modality_routing": routing}

    # -- forward -----------------------------------------------------------------------------------
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # transformers' own rename (5.24)
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        padding_side: Literal["left", "right"] = "right",
        **kwargs,
    ) -> MultimodalCausalLMOutput:
        """Logits (and the loss, given `labels`) over the expanded sequence.

        Args:
            input_ids: `(B, T)` token ids with `config.image_token_index` once per image.
            attention_mask: `(B, T)` 1 for real tokens, 0 for padding; during cached generation, the mask
                over the cache plus the new tokens, as returned in the previous output's `attention_mask`.
                Packed rows (several samples back to back, padding only at the end) number their
                samples 1, 2, 3, ...: attention is then blocked between samples and positions restart.
            pixel_values: `(num_images, 3, H, W)`, one per placeholder, in order of appearance.
            labels: `(B, T)` targets aligned with `input_ids` (shifted inside, as in transformers).
            cache: the key/value cache of earlier steps (transformers' `Cache`; named `past_key_values`
                before transformers 5.24); the output's `cache` is the one to pass to the next step.
            padding_side: where rows shorter after expansion get their extra padding; generation uses "left".
        """
        return self.multimodal_forward(
            input_ids, attention_mask, pixel_values, labels, cache, use_cache, logits_to_keep, padding_side, **kwargs
        )


AutoConfig.register("owl2", Owl2Config)
AutoConfig.register("owl2_vision", Owl2VisionConfig)
AutoConfig.register("owl2_abstractor", Owl2AbstractorConfig)
AutoModel.register(Owl2Config, Owl2Model)
AutoModelForImageTextToText.register(Owl2Config, Owl2Model)

__all__ = ["Owl2CausalLMOutput", "Owl2Model", "Owl2PreTrainedModel"]
