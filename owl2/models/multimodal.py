"""What every family shares: placeholders in the text become blocks of modality tokens, then a causal LM runs.

A prompt holds one negative placeholder id per input (mPLUG-Owl2's image -200; OneLLM's eight modalities,
`owl2.constants.ONELLM_MODALITY_TOKEN_INDEX`). A family encodes its inputs into one block of LLM tokens per
input (`ModalityTokens`); from there on everything is shared:

- `splice_modality_tokens`: each placeholder becomes its input's block, vectorised over the batch (mPLUG-Owl2's
  `prepare_inputs_labels_for_multimodal` in `modeling_mplug_owl2.py` loops over rows and images in Python;
  OneLLM's `Transformer.forward` in `onellm.py` takes one modality per batch and puts its block after BOS);
- `positions_from_mask`: positions count real tokens only, so left padding and packed rows shift nothing;
- `MultimodalPreTrainedModel`: the forward plumbing (splice, positions, packed rows, cache length, loss);
- `MultimodalGenerationMixin`: left padding during generation and the expanded attention mask carried
  from step to step.

Unlike either official code, rows keep their padding on their side (so a left-padded batch generates what
each row generates alone), positions come from the attention mask, and the KV cache counts every spliced
token (OneLLM's release offsets its later decoding steps by 30 of the 32 positions it inserts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from owl2.constants import IGNORE_INDEX
from owl2.models import varlen  # noqa: F401  (registers attn_implementation="owl2_varlen" with transformers)

TEXT_MODALITY_ID = 0
"""Modality id of text tokens and padding in `MergedInputs.modality_ids` (`owl2.constants.MODALITIES[0]`)."""


@dataclass
class MultimodalCausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus the attention mask of the expanded sequence the logits cover.

    Args:
        attention_mask: `(B, T')` mask over the sequence after each placeholder became its tokens
            (the cache included, when one is used).
    """

    attention_mask: torch.LongTensor | None = None


@dataclass(frozen=True)
class ModalityTokens:
    """The LLM tokens of every input of one modality, to be spliced where `input_ids` hold its placeholder."""

    name: str
    """The modality, named in errors ("image", "audio")."""
    placeholder: int
    """Its placeholder id in `input_ids` (negative)."""
    modality_id: int
    """The id its tokens get in `MergedInputs.modality_ids` (text is `TEXT_MODALITY_ID`)."""
    embeds: torch.Tensor
    """`(N, K, D)`: one block of K tokens per input, in order of appearance across the batch (row-major)."""
    inputs: str
    """The inputs, plural, as errors name them ("images", "audio inputs")."""
    source: str
    """The argument they came from, as errors name it ("pixel_values", "modality_inputs['audio']")."""


@dataclass
class MergedInputs:
    """Text and modality tokens spliced into one sequence (`splice_modality_tokens`)."""

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


def splice_modality_tokens(
    input_ids: torch.LongTensor,
    embed_tokens: nn.Module,
    attention_mask: torch.Tensor | None,
    labels: torch.LongTensor | None,
    modalities: Sequence[ModalityTokens],
    padding_side: Literal["left", "right"] = "right",
) -> MergedInputs:
    """Splice each input's block of tokens in place of its placeholder, for any number of modalities.

    A row grows by `K_m - 1` per input of modality m; rows that end up shorter than the longest are padded
    on `padding_side` (mask 0, labelled IGNORE_INDEX, modality `TEXT_MODALITY_ID`). Spliced tokens take
    their placeholder's mask value (1, or its sample number in a packed row), are never supervised and
    carry their modality's `modality_id`. One host sync, for the counts and the new length.

    Args:
        input_ids: `(B, T)` token ids with one placeholder per input.
        embed_tokens: The LLM's input embedding, applied to the text positions.
        attention_mask: `(B, T)`, or None for no padding.
        labels: `(B, T)` targets aligned with `input_ids`, or None.
        modalities: Every modality the model knows, each with its inputs' blocks (`(0, K, D)` when none
            were given), so that a placeholder of any of them is counted.
        padding_side: Where rows shorter after the splice get their extra padding.

    Raises:
        ValueError: a modality's placeholder count differs from its number of inputs, a negative id is no
            known placeholder, or a block's shape does not fit the embeddings.
    """
    batch, seq = input_ids.shape
    device = input_ids.device
    text_rows = batch * seq
    is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
    span = torch.ones_like(input_ids)  # tokens each input position becomes
    block_start = torch.zeros_like(input_ids)  # row of a placeholder's first token in the source table
    position_modality = torch.full_like(input_ids, TEXT_MODALITY_ID)
    text_embeds = embed_tokens(input_ids.clamp(min=0))  # (B, T, D); placeholders' rows are replaced below
    width = text_embeds.shape[-1]
    blocks, counts, table_rows = [], [], text_rows
    for modality in modalities:
        embeds = modality.embeds
        if embeds.dim() != 3 or embeds.shape[-1] != width:
            raise ValueError(
                f"{modality.name} tokens must have shape (inputs, tokens per input, {width}) to fit the LLM's "
                f"embeddings, got {tuple(embeds.shape)}"
            )
        per_input = embeds.shape[1]
        is_this = input_ids == modality.placeholder  # (B, T)
        ordinal = is_this.flatten().cumsum(0).view(batch, seq) - 1  # which input of this modality a placeholder is
        block_start = torch.where(is_this, table_rows + ordinal * per_input, block_start)
        span = torch.where(is_this, per_input, span)
        position_modality = torch.where(is_this, modality.modality_id, position_modality)
        is_placeholder |= is_this
        counts.append(is_this.sum())
        blocks.append(embeds.flatten(0, 1).to(text_embeds.dtype))
        table_rows += embeds.shape[0] * per_input
    end = span.cumsum(dim=1)  # (B, T) exclusive end of each position in its expanded row
    row_lengths = end[:, -1]
    stray = (input_ids < 0) & ~is_placeholder
    *found, strays, new_seq = (int(x) for x in torch.stack([*counts, stray.sum(), row_lengths.max()]).tolist())
    for modality, count in zip(modalities, found):
        given = modality.embeds.shape[0]
        if count != given:
            raise ValueError(
                f"input_ids hold {count} {modality.name} placeholders ({modality.placeholder}) but {given} "
                f"{modality.inputs} were given: {modality.source} must have one per placeholder, in order of "
                "appearance across the batch"
            )
    if strays:
        known = {modality.name: modality.placeholder for modality in modalities}
        raise ValueError(f"input_ids hold {strays} negative ids that are no placeholder of this model ({known})")
    shift = (new_seq - row_lengths) if padding_side == "left" else torch.zeros_like(row_lengths)
    start = end - span + shift[:, None]  # (B, T) expanded index of each position's first token

    # Each expanded slot has an origin (the flat input position it came from; pad slots get `text_rows`)
    # and a source row in the table [text embeddings (B*T); each modality's tokens (N_m*K_m); zeros].
    widest = max((modality.embeds.shape[1] for modality in modalities), default=1)
    offsets = torch.arange(max(widest, 1), device=device)  # (K,)
    flat_position = torch.arange(text_rows, device=device).view(batch, seq, 1)
    source = torch.where(is_placeholder[..., None], block_start[..., None] + offsets, flat_position)  # (B, T, K)
    used = offsets < span[..., None]  # a text position fills one slot, a placeholder its block's K_m
    target = torch.where(used, start[..., None] + offsets, new_seq)  # unused -> a spill column, dropped
    origin = torch.full((batch, new_seq + 1), text_rows, dtype=torch.long, device=device)
    origin.scatter_(1, target.view(batch, -1), flat_position.expand(-1, -1, offsets.numel()).reshape(batch, -1))
    source_index = torch.full((batch, new_seq + 1), table_rows, dtype=torch.long, device=device)
    source_index.scatter_(1, target.view(batch, -1), source.view(batch, -1))
    origin, source_index = origin[:, :new_seq], source_index[:, :new_seq]  # (B, T')

    table = torch.cat([text_embeds.flatten(0, 1), *blocks, text_embeds.new_zeros(1, width)])
    inputs_embeds = table.index_select(0, source_index.flatten()).view(batch, new_seq, width)

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    new_mask = torch.cat([attention_mask.flatten(), attention_mask.new_zeros(1)])[origin]
    modality_ids = torch.cat([position_modality.flatten(), position_modality.new_full((1,), TEXT_MODALITY_ID)])[origin]
    new_labels = None
    if labels is not None:
        supervised = labels.masked_fill(is_placeholder, IGNORE_INDEX).flatten()
        new_labels = torch.cat([supervised, supervised.new_full((1,), IGNORE_INDEX)])[origin]
    return MergedInputs(inputs_embeds, new_mask, modality_ids, new_labels)


class MultimodalPreTrainedModel(PreTrainedModel):
    """A causal LM over text with modality placeholders: the plumbing both families share.

    A family subclasses it with `language_model` (a transformers decoder taking `inputs_embeds`), `lm_head`,
    `modality_inputs_name` (its forward's argument for the raw inputs) and the hooks `placeholder_ids`,
    `embed_modality_inputs` and, when its decoder routes by modality, `decoder_kwargs`; its `forward`
    calls `multimodal_forward`. `MultimodalGenerationMixin` adds generation.
    """

    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _tied_weights_keys = {"lm_head.weight": "language_model.embed_tokens.weight"}

    modality_inputs_name: ClassVar[str]
    """The forward argument that carries the raw modality inputs, named in errors ("pixel_values")."""

    def __init__(self, config: PreTrainedConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.loss_type = "ForCausalLM"  # transformers would guess it from the class name, and fail

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.language_model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    # -- what a family provides --------------------------------------------------------------------
    def placeholder_ids(self) -> dict[str, int]:
        """Modality name -> its placeholder id in `input_ids`."""
        raise NotImplementedError

    def tokens_per_input(self) -> dict[str, int]:
        """Modality name -> the LLM tokens each of its inputs becomes (what a placeholder grows to)."""
        raise NotImplementedError

    def embed_modality_inputs(self, modality_inputs: Any) -> list[ModalityTokens]:
        """The family's raw inputs -> one `ModalityTokens` per modality it knows (empty blocks for those absent)."""
        raise NotImplementedError

    def decoder_kwargs(self, inputs_embeds: torch.Tensor, modality_ids: torch.Tensor | None) -> dict[str, Any]:
        """Extra keywords for `language_model`, e.g. modality routing; `modality_ids` is None for text only."""
        return {}

    # -- the shared forward ------------------------------------------------------------------------
    def multimodal_forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        modality_inputs: Any,
        labels: torch.LongTensor | None,
        cache: Cache | None,
        use_cache: bool | None,
        logits_to_keep: int | torch.Tensor,
        padding_side: Literal["left", "right"],
        **kwargs,
    ) -> MultimodalCausalLMOutput:
        """Logits (and the loss, given `labels`) over the sequence with every placeholder expanded.

        `modality_inputs` (None for text only) goes to `embed_modality_inputs`; the other arguments are
        documented on the families' `forward`.
        """
        position_ids = kwargs.pop("position_ids", None)
        prepared_mask = attention_mask is not None and attention_mask.ndim == 4
        if prepared_mask and (modality_inputs is not None or position_ids is None or cache is None):
            raise ValueError(
                "a 4-D attention_mask (what generation prepares for a static cache) is accepted in decoding steps "
                f"only: with a cache and position_ids, without {self.modality_inputs_name}"
            )
        continuing = prepared_mask or self._continues_cache(input_ids, attention_mask, cache)
        if use_cache is None:
            use_cache = self.config.get_text_config().use_cache and not self.training
        modality_ids = None
        if modality_inputs is not None:
            if continuing:
                raise ValueError(
                    f"{self.modality_inputs_name} can only be given with an empty cache (the prompt's first forward)"
                )
            merged = splice_modality_tokens(
                input_ids,
                self.get_input_embeddings(),
                attention_mask,
                labels,
                self.embed_modality_inputs(modality_inputs),
                padding_side,
            )
            inputs_embeds, attention_mask, labels = merged.inputs_embeds, merged.attention_mask, merged.labels
            modality_ids = merged.modality_ids
        else:
            if not continuing:
                self._refuse_placeholders(input_ids)
            inputs_embeds = self.get_input_embeddings()(input_ids)

        seq = inputs_embeds.shape[1]
        if attention_mask is None:
            cached = cache.get_seq_length() if continuing else 0
            attention_mask = torch.ones(inputs_embeds.shape[0], cached + seq, dtype=torch.long, device=input_ids.device)
        packed = not continuing and bool(attention_mask.max() > 1)
        if position_ids is None:
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
            **self.decoder_kwargs(inputs_embeds, modality_ids),
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            vocab_size = self.config.get_text_config().vocab_size
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
        return MultimodalCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=None if prepared_mask else attention_mask,  # generation extends its own 2-D mask
        )

    @staticmethod
    def _continues_cache(input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, cache: Cache | None) -> bool:
        """Whether this forward continues a filled cache (a decoding step) rather than starting one.

        Read from shapes where it can be: during generation the mask covers the cached tokens too, so it is
        longer than `input_ids` exactly when the cache holds something. That keeps a compiled decoding step
        free of host syncs (a static cache's length is a tensor). Without a mask, the cache is asked.
        """
        if cache is None:
            return False
        if attention_mask is not None:
            return attention_mask.shape[1] > input_ids.shape[1]
        return bool(cache.get_seq_length() > 0)

    def _refuse_placeholders(self, input_ids: torch.LongTensor) -> None:
        """Raise if a prompt given without modality inputs holds any negative id (one host sync)."""
        negative = input_ids < 0
        if not bool(negative.any()):
            return
        names = {index: name for name, index in self.placeholder_ids().items()}
        found = sorted(set(input_ids[negative].tolist()), reverse=True)
        described = ", ".join(f"{names.get(index, 'unknown')} ({index})" for index in found)
        raise ValueError(f"input_ids hold {described} placeholders but no {self.modality_inputs_name} were given")


def repeat_inputs_per_row(
    inputs: torch.Tensor, input_ids: torch.LongTensor, placeholder: int, expand_size: int
) -> torch.Tensor:
    """Repeat each row's inputs `expand_size` times, as transformers repeats the rows for beams and samples.

    transformers' `repeat_interleave` of every tensor along dim 0 is right for per-row tensors only; inputs
    are per placeholder, so rows holding 2 and 1 inputs `[a, b | c]` must become `[a, b, a, b | c, c]`,
    not `[a, a, b, b | c, c]`.

    Args:
        inputs: `(N, ...)` one input per placeholder, in order of appearance across the batch.
        input_ids: `(B, T)` the prompts before expansion.
        placeholder: This modality's placeholder id.
        expand_size: Copies of each row (`num_beams` or `num_return_sequences`).
    """
    counts = (input_ids == placeholder).sum(dim=1)  # (B,) inputs per row
    starts = counts.cumsum(0) - counts
    index = [torch.arange(s, s + c).repeat(expand_size) for s, c in zip(starts.tolist(), counts.tolist())]
    return inputs.index_select(0, torch.cat(index).to(inputs.device))


_SPLICE_GROWTH = "_owl2_splice_growth"
"""Generation keyword carrying `splice_growth` from input expansion to cache sizing; never reaches a forward."""


class MultimodalGenerationMixin(GenerationMixin):
    """transformers' `GenerationMixin` for a `MultimodalPreTrainedModel`.

    Generated tokens are appended on the right, so the splice pads rows on the left; the prompt's forward
    returns the attention mask of the expanded sequence, which later steps (which see only new tokens)
    carry on; the raw modality inputs are dropped once their tokens are in the cache; with beams or several
    sequences per prompt, each row's inputs are repeated with the row (`repeat_inputs_per_row`).
    """

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids: torch.LongTensor | None = None, **kwargs
    ) -> tuple[torch.LongTensor | None, dict[str, Any]]:
        raw = kwargs.pop(self.modality_inputs_name, None)
        expanded_ids, kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **kwargs)
        if raw is not None and expand_size > 1 and input_ids is not None:
            placeholders = self.placeholder_ids()
            if isinstance(raw, torch.Tensor):  # one modality, one tensor (mPLUG-Owl2's pixel_values)
                (placeholder,) = placeholders.values()
                raw = repeat_inputs_per_row(raw, input_ids, placeholder, expand_size)
            else:
                raw = {  # an unknown modality is left for the forward to refuse by name
                    m: repeat_inputs_per_row(x, input_ids, placeholders[m], expand_size) if m in placeholders else x
                    for m, x in raw.items()
                }
        if raw is not None:
            kwargs[self.modality_inputs_name] = raw
            if expanded_ids is not None:
                kwargs[_SPLICE_GROWTH] = self.splice_growth(expanded_ids)
        return expanded_ids, kwargs

    def splice_growth(self, input_ids: torch.LongTensor) -> int:
        """Tokens the longest row gains when its placeholders become their blocks (one host sync)."""
        growth = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        for name, placeholder in self.placeholder_ids().items():
            growth += (input_ids == placeholder).sum(dim=1) * (self.tokens_per_input()[name] - 1)
        return int(growth.max()) if growth.numel() else 0

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size,
                                      max_cache_length):  # fmt: skip
        # transformers sizes a static cache for the prompt as given; the splice makes rows longer.
        max_cache_length += model_kwargs.pop(_SPLICE_GROWTH, 0)
        return super()._prepare_cache_for_generation(
            generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs) -> dict:
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        mask = kwargs.get("attention_mask")
        if mask is not None and inputs.get("attention_mask") is not mask:
            # A static cache: transformers turned the 2-D mask into a 4-D one of the cache's fixed length. The
            # prompt's forward needs the 2-D mask to splice; a decoding step (compiled) keeps the 4-D one and
            # gets its positions here, counted as the forward counts them.
            if is_first_iteration:
                inputs["attention_mask"] = mask
            elif inputs.get("position_ids") is None:
                inputs["position_ids"] = positions_from_mask(mask, packed=False)[:, -inputs["input_ids"].shape[1] :]
        inputs["padding_side"] = "left"  # generated tokens are appended on the right of every row
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs.pop(self.modality_inputs_name, None)  # transformers drops `pixel_values` itself, not the others
        return inputs

    def _update_model_kwargs_for_generation(
        self, outputs: MultimodalCausalLMOutput, model_kwargs: dict[str, Any], *args, **kwargs
    ) -> dict:
        if outputs.cache is not None and outputs.attention_mask is not None:
            # With a cache, later steps see only new tokens: carry the mask of the expanded sequence.
            model_kwargs["attention_mask"] = outputs.attention_mask
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)


__all__ = [
    "MergedInputs",
    "ModalityTokens",
    "MultimodalCausalLMOutput",
    "MultimodalGenerationMixin",
    "MultimodalPreTrainedModel",
    "positions_from_mask",
    "repeat_inputs_per_row",
    "splice_modality_tokens",
]
