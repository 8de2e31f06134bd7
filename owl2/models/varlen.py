"""Padding-free attention through PyTorch's own variable-length flash kernel (`torch.nn.attention.varlen`).

`attn_implementation="owl2_varlen"` on the decoder (`config.text_config._attn_implementation`) gives the
padding-free path that transformers' `flash_attention_2` gives with the flash-attn package, on machines
without it: over a training forward (queries and keys the same tokens, no cache), the samples of the batch,
found where the positions restart (owl2's forward numbers them from the mask, packed rows included), are
concatenated and each attends causally to itself alone. No `(T, T)` mask is built, padding costs nothing,
and packed rows cost what their samples cost.

Everything else, a forward over a cache (prefill into it or decoding), goes to transformers' sdpa with
transformers' sdpa mask, so the implementation is safe to leave on for generation.

The kernel is CUDA's. On another device the same segments run one `scaled_dot_product_attention(is_causal=True)`
call each: the same function, slowly, for tests and CPU runs. Finding the segments reads them back to the host
(one sync per layer), so this path is for eager training; `owl2.compile.compile_blocks` refuses to trace it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "owl2_varlen"


def segment_boundaries(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Where each sample starts in the flattened `(B * T,)` tokens, from `(B, T)` positions.

    A sample starts at every row's first token and wherever a position is not its predecessor plus one
    (transformers' rule for packed rows: `masking_utils.find_packed_sequence_indices`). Padding, whose positions
    repeat, becomes one-token segments that attend to themselves.

    Returns:
        `cu_seqlens`, `(S + 1,)` int32 offsets of the S segments and the total, and the longest segment's length.
    """
    batch, length = position_ids.shape
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    offsets = starts.reshape(-1).nonzero().squeeze(1)  # (S,) one host sync
    cu_seqlens = F.pad(offsets, (0, 1), value=batch * length).to(torch.int32)
    return cu_seqlens, int((cu_seqlens[1:] - cu_seqlens[:-1]).max())


def _segments_sdpa(query, key, value, cu_seqlens, scale, enable_gqa):
    """The varlen kernel's function, one sample at a time: `(N, H, D)` tokens in, `(N, Hq, D)` out."""
    out = torch.empty_like(query)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))  # (H, n, D)
        out[start:end] = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=enable_gqa
        ).transpose(0, 1)
    return out


def varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface: `(B, H, T, D)` q, k, v -> `(B, T, H, D)` output."""
    batch, heads, length, head_dim = query.shape
    over_cache = key.shape[2] != length or length == 1  # positions no longer describe the keys
    if position_ids is None or over_cache or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError(f"{NAME} attention has no dropout (got {dropout}); use sdpa to train with attention dropout")
    cu_seqlens, longest = segment_boundaries(position_ids.expand(batch, -1))
    flat = lambda t: t.transpose(1, 2).reshape(batch * length, t.shape[1], head_dim)  # noqa: E731 (B*T, H, D)
    q, k, v = flat(query), flat(key), flat(value)
    gqa = k.shape[1] != heads
    if query.device.type == "cuda":
        from torch.nn.attention.varlen import varlen_attn

        out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, longest, longest, scale=scaling,
                          window_size=(-1, 0), enable_gqa=gqa)  # fmt: skip
    else:
        out = _segments_sdpa(q, k, v, cu_seqlens, scaling, gqa)
    return out.view(batch, length, heads, head_dim), None


AttentionInterface.register(NAME, varlen_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)
