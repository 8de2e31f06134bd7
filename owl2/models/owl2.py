"""mPLUG-Owl2 end to end (paper section 3; official `modeling_mplug_owl2.py`).

images -> ViT -> abstractor -> `num_queries + 1` tokens per image, spliced into the text where
`input_ids` hold the image placeholder -> modality-adaptive LLaMA-2 -> logits and loss.

Unlike the official code, the splice is vectorised (no Python loop over the batch), keeps each row's
padding on its side (so a left-padded batch generates what each row generates alone), derives
positions from the attention mask, and keeps the expanded attention mask across generation steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils.deprecation import deprecate_kwarg

from owl2.config import Owl2AbstractorConfig, Owl2Config, Owl2VisionConfig
from owl2.constants import IGNORE_INDEX, MODALITIES
from owl2.models.abstractor import VisualAbstractor
from owl2.models.decoder import ModalityAdaptiveLlamaModel, ModalityRouting
from owl2.models.vision import ClipVisionTransformer

TEXT, IMAGE = MODALITIES.index("text"), MODALITIES.index("image")


@dataclass
class Owl2CausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the attention mask of the expanded sequence the logits cover.

    Args:
        attention_mask: `(B, T')` mask over the sequence after each image placeholder became its tokens
            (the cache included, when one is used).
    """

    attention_mask: torch.LongTensor | None = None


@dataclass
class MergedInputs:
    """Text and image tokens spliced into one sequence (`Owl2Model.merge_image_tokens`)."""

    inputs_embeds: torch.Tensor  # (B, T', D)
    attention_mask: torch.Tensor  # (B, T')
    modality_ids: torch.Tensor  # (B, T')
    labels: torch.Tensor | None  # (B, T')


def positions_from_mask(attention_mask: torch.Tensor, packed: bool) -> torch.Tensor:
    """Position of each token in its sample, counting real tokens only (left padding shifts nothing).

    Args:
        attention_mask: `(B, T)` 0 for padding, otherwise 1, or the token's sample number in packed rows.
        packed: whether positions restart wherever the sample number changes.
    """
    real = (attention_mask > 0).long().cumsum(-1)  # (B, T) real tokens so far
    if not packed:
        return (real - 1).clamp(min=0)
    sample_start = attention_mask != F.pad(attention_mask[:, :-1], (1, 0), value=-1)  # (B, T)
    before = torch.where(sample_start, real - 1, 0).cummax(-1).values  # real tokens before this sample
    return (real - 1 - before).clamp(min=0)


class Owl2PreTrainedModel(PreTrainedModel):
    config_class = Owl2Config
    base_model_prefix = "owl2"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["ModalityAdaptiveDecoderLayer", "AbstractorLayer", "Block"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

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
        elif isinstance(module, VisionTransformer):
            init.trunc_normal_(module.pos_embed, std=0.02)
            init.normal_(module.cls_token, std=1e-6)


class Owl2Model(Owl2PreTrainedModel, GenerationMixin):
    """mPLUG-Owl2 as a transformers causal LM.

    `input_ids` hold `config.image_token_index` once per image; `pixel_values` are the images
    `(total_images, 3, H, W)` in order of appearance across the batch (row-major). Each placeholder
    becomes that image's `num_queries + 1` tokens and the returned logits cover that expanded sequence.
    """

    _tied_weights_keys = {"lm_head.weight": "language_model.embed_tokens.weight"}

    def __init__(self, config: Owl2Config):
        super().__init__(config)
        text = config.text_config
        self.vision_model = ClipVisionTransformer(config.vision_config)
        self.abstractor = VisualAbstractor(config.abstractor_config, text.hidden_size)
        self.language_model = ModalityAdaptiveLlamaModel(text)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.loss_type = "ForCausalLM"  # transformers would guess it from the class name, and fail
        self.post_init()

    # -- transformers plumbing ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, plus local folders of the official release (converted on load)."""
        from owl2.checkpoint.convert import is_official_folder, load_official_model  # checkpoint imports models

        if not args and is_official_folder(pretrained_model_name_or_path):
            return load_official_model(pretrained_model_name_or_path, model_class=cls, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.language_model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

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
        """Splice each image's tokens in place of its placeholder.

        Rows grow by `num_image_tokens - 1` per image; rows that end up shorter than the longest are
        padded on `padding_side` (mask 0, labelled IGNORE_INDEX). Image tokens take their
        placeholder's mask value (1, or its segment id in a packed row), are never supervised and
        have modality IMAGE.
        """
        batch, seq = input_ids.shape
        num_images, per_image, width = image_features.shape
        device = input_ids.device
        is_image = input_ids == self.config.image_token_index  # (B, T)
        span = torch.where(is_image, per_image, 1)  # tokens each input position becomes
        end = span.cumsum(dim=1)  # (B, T) exclusive end of each position in its expanded row
        row_lengths = end[:, -1]
        found, new_seq = (int(x) for x in torch.stack([is_image.sum(), row_lengths.max()]).tolist())
        if found != num_images:
            raise ValueError(
                f"input_ids hold {found} image placeholders ({self.config.image_token_index}) but {num_images} images "
                "were given: pixel_values must have one image per placeholder, in order of appearance"
            )
        shift = (new_seq - row_lengths) if padding_side == "left" else torch.zeros_like(row_lengths)
        start = end - span + shift[:, None]  # (B, T) expanded index of each position's first token

        # Each expanded slot has an origin (the flat input position it came from; pad slots get
        # `text_rows`) and a source row in the table [text embeddings (B*T); image tokens (N*K); zeros].
        text_rows, image_rows = batch * seq, num_images * per_image
        offsets = torch.arange(per_image, device=device)  # (K,)
        flat_position = torch.arange(text_rows, device=device).view(batch, seq, 1)
        image_ordinal = is_image.flatten().cumsum(0).view(batch, seq, 1) - 1  # which image a placeholder is
        source = torch.where(
            is_image[..., None], text_rows + image_ordinal * per_image + offsets, flat_position
        )  # (B, T, K)
        used = is_image[..., None] | (offsets == 0)  # a text position fills one slot, a placeholder K
        target = torch.where(used, start[..., None] + offsets, new_seq)  # unused -> a spill column, dropped
        origin = torch.full((batch, new_seq + 1), text_rows, dtype=torch.long, device=device)
        origin.scatter_(1, target.view(batch, -1), flat_position.expand(-1, -1, per_image).reshape(batch, -1))
        source_index = torch.full((batch, new_seq + 1), text_rows + image_rows, dtype=torch.long, device=device)
        source_index.scatter_(1, target.view(batch, -1), source.view(batch, -1))
        origin, source_index = origin[:, :new_seq], source_index[:, :new_seq]  # (B, T')

        text_embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image, 0))  # (B, T, D)
        table = torch.cat(
            [text_embeds.flatten(0, 1), image_features.flatten(0, 1).to(text_embeds.dtype), text_embeds.new_zeros(1, width)]
        )
        inputs_embeds = table.index_select(0, source_index.flatten()).view(batch, new_seq, width)

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        new_mask = torch.cat([attention_mask.flatten(), attention_mask.new_zeros(1)])[origin]
        modality_ids = torch.cat([is_image.flatten(), is_image.new_zeros(1)])[origin].long() * IMAGE
        new_labels = None
        if labels is not None:
            supervised = labels.masked_fill(is_image, IGNORE_INDEX).flatten()
            new_labels = torch.cat([supervised, supervised.new_full((1,), IGNORE_INDEX)])[origin]
        return MergedInputs(inputs_embeds, new_mask, modality_ids, new_labels)

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
    ) -> Owl2CausalLMOutput:
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
        cached = cache.get_seq_length() if cache is not None else 0
        if use_cache is None:
            use_cache = self.config.text_config.use_cache and not self.training
        if pixel_values is not None:
            if cached:
                raise ValueError("pixel_values can only be given with an empty cache (the prompt's first forward)")
            merged = self.merge_image_tokens(
                input_ids, attention_mask, labels, self.encode_images(pixel_values), padding_side
            )
            inputs_embeds, attention_mask, labels = merged.inputs_embeds, merged.attention_mask, merged.labels
            routing = ModalityRouting.from_ids(merged.modality_ids)
        else:
            if not cached and bool((input_ids == self.config.image_token_index).any()):
                raise ValueError(
                    f"input_ids hold image placeholders ({self.config.image_token_index}) but no pixel_values were given"
                )
            inputs_embeds = self.get_input_embeddings()(input_ids)
            routing = ModalityRouting.uniform(input_ids.shape, TEXT, input_ids.device)

        seq = inputs_embeds.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[0], cached + seq, dtype=torch.long, device=input_ids.device)
        packed = not cached and bool(attention_mask.max() > 1)
        position_ids = positions_from_mask(attention_mask, packed)[:, -seq:]
        if packed:
            use_cache = False
            if labels is not None:  # a sample's first token is no target of the sample before it
                labels = labels.masked_fill(position_ids == 0, IGNORE_INDEX)
            # With no mask, transformers blocks attention where the positions restart (varlen for flash).
            attention_mask = None

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            modality_routing=routing,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs)
        return Owl2CausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask,
        )

    # -- generation --------------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, *args, **kwargs) -> dict:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs["padding_side"] = "left"  # generated tokens are appended on the right of every row
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs) -> dict:
        if outputs.cache is not None and outputs.attention_mask is not None:
            # With a cache, later steps see only new tokens: carry the mask of the expanded sequence.
            model_kwargs["attention_mask"] = outputs.attention_mask
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)


AutoConfig.register("owl2", Owl2Config)
AutoConfig.register("owl2_vision", Owl2VisionConfig)
AutoConfig.register("owl2_abstractor", Owl2AbstractorConfig)
AutoModel.register(Owl2Config, Owl2Model)
AutoModelForImageTextToText.register(Owl2Config, Owl2Model)

__all__ = ["Owl2CausalLMOutput", "Owl2Model", "Owl2PreTrainedModel"]
