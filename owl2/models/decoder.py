"""The modality-adaptive LLaMA-2 decoder (paper section 3.2; official `modeling_llama2.py`, `multiway.py`).

mPLUG-Owl2 gives each modality its own RMSNorms (before attention and before the FFN) and its own
K and V projections; Q, O, the FFN, the embeddings, the final norm and the LM head are shared. A
token's modality comes from where the image placeholders were expanded.

Built from transformers' LLaMA by subclassing. Costs are those of LLaMA:
- the modality routing (which tokens belong to which modality) is computed once per forward, with
  one host sync, and handed to every layer; a batch of one modality (text-only training, every
  decoding step) takes the plain LLaMA path with no gather at all;
- each K/V branch runs only over its own tokens, never over the whole sequence;
- the modality norms differ only by their gain, so a token is normalised once and then scaled by
  its modality's gain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.cache_utils import Cache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from owl2.constants import MODALITIES


@dataclass(frozen=True)
class ModalityRouting:
    """Which modality each token of a `(B, T)` batch belongs to, prepared once per forward.

    Attributes:
        modality_ids: `(B, T)` modality index of each token (see `owl2.config.MODALITIES`).
        single: the modality of every token when the batch holds only one, else None.
        indices: when mixed, per modality the flat indices of its tokens, in order (their lengths are the
            token counts: sizes, which a compiled block treats as dynamic, not host ints it would bake in).
        inverse: when mixed, `(B, T)`: where each token's output is among the modalities' outputs, concatenated.
    """

    modality_ids: torch.Tensor
    single: int | None
    indices: tuple[torch.Tensor, ...] | None = None
    inverse: torch.Tensor | None = None

    @classmethod
    def uniform(cls, shape: tuple[int, int], modality: int, device: torch.device) -> ModalityRouting:
        """Every token of a `(B, T)` batch in one modality; no host sync."""
        return cls(torch.full(shape, modality, dtype=torch.long, device=device), single=modality)

    @classmethod
    def from_ids(cls, modality_ids: torch.Tensor, num_modalities: int = len(MODALITIES)) -> ModalityRouting:
        """Routing for arbitrary modality ids (one host sync, for the per-modality token counts)."""
        counts = torch.bincount(modality_ids.flatten(), minlength=num_modalities).tolist()
        present = [m for m, c in enumerate(counts) if c]
        if len(present) == 1:
            return cls(modality_ids, single=present[0])
        order = torch.argsort(modality_ids.flatten(), stable=True)  # (B*T,) tokens sorted by modality
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return cls(modality_ids, single=None, indices=order.split(counts), inverse=inverse.view_as(modality_ids))

    @property
    def counts(self) -> tuple[int, ...] | None:
        """Tokens per modality, when mixed."""
        return None if self.indices is None else tuple(len(index) for index in self.indices)


class ModalityLinear(nn.ModuleDict):
    """One `nn.Linear` per modality (official `MultiwayNetwork` of linears); each runs on its own tokens only.

    Separate parameters (not one stacked tensor) so that a training stage can freeze one modality's
    branch while the other trains.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__({name: nn.Linear(in_features, out_features, bias=bias) for name in MODALITIES})

    def forward(self, x: torch.Tensor, routing: ModalityRouting) -> torch.Tensor:
        branches = list(self.values())
        if routing.single is not None:
            return branches[routing.single](x)
        flat = x.flatten(0, 1)  # (B*T, in)
        out = torch.cat([branch(flat.index_select(0, index)) for branch, index in zip(branches, routing.indices)])
        # Indexing by the (B, T) inverse, not a view of a flat result, keeps the sizes symbolic when compiled.
        return out[routing.inverse]  # (B, T, out)


class ModalityRMSNorm(nn.ModuleDict):
    """One RMSNorm gain per modality (official `MultiwayNetwork` of norms); normalises once, then scales."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__({name: LlamaRMSNorm(hidden_size, eps=eps) for name in MODALITIES})
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor, routing: ModalityRouting) -> torch.Tensor:
        norms = list(self.values())
        if routing.single is not None:
            return norms[routing.single](hidden_states)
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(input_dtype)
        gains = torch.stack([norm.weight for norm in norms])  # (M, D)
        return F.embedding(routing.modality_ids, gains) * hidden_states  # (B, T, D) gain per token


class ModalityAdaptiveAttention(LlamaAttention):
    """LLaMA attention with per-modality K and V projections; Q and O are shared."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        kv_width = config.num_key_value_heads * self.head_dim
        self.k_proj = ModalityLinear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.v_proj = ModalityLinear(config.hidden_size, kv_width, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        modality_routing: ModalityRouting,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nh, T, hd)
        key_states = self.k_proj(hidden_states, modality_routing).view(hidden_shape).transpose(1, 2)  # (B, nkv, T, hd)
        value_states = self.v_proj(hidden_states, modality_routing).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class ModalityAdaptiveDecoderLayer(LlamaDecoderLayer):
    """LLaMA decoder layer with modality-specific norms and K/V around the shared attention and FFN."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.self_attn = ModalityAdaptiveAttention(config, layer_idx)
        self.input_layernorm = ModalityRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = ModalityRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        modality_routing: ModalityRouting,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states, modality_routing)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            modality_routing=modality_routing,
            cache=cache,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states, modality_routing)
        return residual + self.mlp(hidden_states)


class ModalityAdaptiveLlamaModel(LlamaModel):
    """`LlamaModel` whose layers are modality-adaptive; `forward` takes a `modality_routing` keyword.

    Without one (plain `input_ids`), every token is text and the model computes exactly what
    `LlamaModel` with the text branch's weights computes.
    """

    def __init__(self, config: LlamaConfig):
        # LlamaModel.__init__ would build (and initialise) plain layers only to have them replaced.
        LlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            ModalityAdaptiveDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids=None, inputs_embeds=None, modality_routing: ModalityRouting | None = None, **kwargs):
        if modality_routing is None:
            reference = input_ids if input_ids is not None else inputs_embeds
            modality_routing = ModalityRouting.uniform(reference.shape[:2], MODALITIES.index("text"), reference.device)
        return super().forward(
            input_ids=input_ids, inputs_embeds=inputs_embeds, modality_routing=modality_routing, **kwargs
        )
