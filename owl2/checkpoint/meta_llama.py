"""Meta's LLaMA layout (`consolidated.*.pth` + `params.json`) <-> transformers' `LlamaForCausalLM`: pure maps.

Mirrors Meta's `llama/model.py` (`Transformer`, `Attention`, `apply_rotary_emb`), which OneLLM's release keeps
(official `model/LLM/onellm.py`), and transformers' `convert_llama_weights_to_hf.py`. Besides the names, the
query and key projections differ in the order of their rows: Meta's RoPE rotates interleaved pairs of
each head's dimensions, `(0, 1), (2, 3), ...`, as complex numbers; transformers' `rotate_half` rotates
dimension `j` with `j + head_dim / 2`. The same rotation needs the rows permuted (`meta_to_hf_rotary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import LlamaConfig

from owl2.checkpoint.keymap import KeyMap

META_TO_HF = KeyMap(
    [
        ("tok_embeddings.weight", "model.embed_tokens.weight"),
        ("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight"),
        ("layers.{i}.attention.wk.weight", "model.layers.{i}.self_attn.k_proj.weight"),
        ("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight"),
        ("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight"),
        ("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight"),
        ("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight"),
        ("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight"),
        ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
        ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
        ("norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ],
    {"i": r"\d+"},
)
"""Meta's key names (left) and `LlamaForCausalLM`'s (right)."""

PARAMS_FIELDS = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "multiple_of",
    "ffn_dim_multiplier",
    "norm_eps",
    "rope_theta",
    "max_batch_size",
    "max_seq_len",
)
"""The `params.json` fields understood here (Meta's `ModelArgs` of LLaMA-2; OneLLM's has a subset)."""

DEFAULT_ROPE_THETA = 10000.0
"""RoPE base when `params.json` has no `rope_theta` (`precompute_freqs_cis`'s default, LLaMA-2's)."""


# -- the q/k row order ---------------------------------------------------------------------------------
def _check_rotary_rows(weight: torch.Tensor, num_heads: int) -> int:
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise ValueError(
            f"a q/k projection of shape {tuple(weight.shape)} cannot hold {num_heads} heads of an even head_dim"
        )
    return rows // num_heads // 2


def meta_to_hf_rotary(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Meta's q/k rows -> transformers': per head, row `2j + a` (pair j, member a) moves to `a * head_dim / 2 + j`."""
    half = _check_rotary_rows(weight, num_heads)
    per_pair = weight.reshape(num_heads, half, 2, *weight.shape[1:])  # (heads, pair, member, ...)
    return per_pair.transpose(1, 2).reshape(weight.shape)  # (heads, member, pair, ...)


def hf_to_meta_rotary(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """transformers' q/k rows -> Meta's: the inverse of `meta_to_hf_rotary`."""
    half = _check_rotary_rows(weight, num_heads)
    per_member = weight.reshape(num_heads, 2, half, *weight.shape[1:])  # (heads, member, pair, ...)
    return per_member.transpose(1, 2).reshape(weight.shape)  # (heads, pair, member, ...)


def _rotary_heads(hf_key: str, num_heads: int, num_kv_heads: int) -> int | None:
    if hf_key.endswith("self_attn.q_proj.weight"):
        return num_heads
    if hf_key.endswith("self_attn.k_proj.weight"):
        return num_kv_heads
    return None


# -- state dicts ---------------------------------------------------------------------------------------
def meta_to_hf(state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int) -> dict[str, torch.Tensor]:
    """Map (part of) a Meta LLaMA state dict to `LlamaForCausalLM` keys, q and k rows permuted; key by key.

    Raises:
        KeyError: a key that is not part of Meta's LLaMA, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        hf_key = META_TO_HF.forward(key)
        if hf_key is None:
            raise KeyError(f"unexpected key in Meta's LLaMA layout: {key!r}")
        heads = _rotary_heads(hf_key, num_heads, num_kv_heads)
        out[hf_key] = tensor if heads is None else meta_to_hf_rotary(tensor, heads)
    return out


def hf_to_meta(state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int) -> dict[str, torch.Tensor]:
    """Map (part of) a `LlamaForCausalLM` state dict to Meta's keys, q and k rows permuted back; key by key.

    Raises:
        KeyError: a key that is not part of `LlamaForCausalLM`, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        meta_key = META_TO_HF.backward(key)
        if meta_key is None:
            raise KeyError(f"unexpected key in a LlamaForCausalLM state dict: {key!r}")
        heads = _rotary_heads(key, num_heads, num_kv_heads)
        out[meta_key] = tensor if heads is None else hf_to_meta_rotary(tensor, heads)
    return out


# -- params.json ---------------------------------------------------------------------------------------
def feed_forward_size(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """The SwiGLU inner width Meta's `FeedForward` derives: 2/3 of 4 * dim, scaled, rounded up to `multiple_of`."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * -(-hidden // multiple_of)


def llama_config_from_params(
    params: Mapping[str, Any], vocab_size: int, intermediate_size: int, **fields: Any
) -> LlamaConfig:
    """The `LlamaConfig` of a `params.json` dict, with the sizes read from the weights.

    Args:
        params: `params.json` (`dim`, `n_layers`, `n_heads`, `norm_eps`; optionally `n_kv_heads`, `rope_theta`,
            and a `vocab_size` that is -1 or the embedding's rows).
        vocab_size: Rows of `tok_embeddings.weight`.
        intermediate_size: Rows of `feed_forward.w1.weight` (what `multiple_of` and `ffn_dim_multiplier` gave).
        **fields: Further `LlamaConfig` fields (e.g. `max_position_embeddings`, token ids).

    Raises:
        ValueError: an unknown or missing field, or a `vocab_size` the weights contradict.
    """
    unknown = sorted(set(params) - set(PARAMS_FIELDS))
    if unknown:
        raise ValueError(f"params.json: unknown fields {unknown} (expected some of {list(PARAMS_FIELDS)})")
    missing = [name for name in ("dim", "n_layers", "n_heads", "norm_eps") if name not in params]
    if missing:
        raise ValueError(f"params.json lacks {missing}")
    declared = params.get("vocab_size", -1)
    if declared >= 0 and declared != vocab_size:
        raise ValueError(f"params.json: vocab_size is {declared}, but tok_embeddings.weight has {vocab_size} rows")
    num_kv_heads = params.get("n_kv_heads")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=params["dim"],
        intermediate_size=intermediate_size,
        num_hidden_layers=params["n_layers"],
        num_attention_heads=params["n_heads"],
        num_key_value_heads=params["n_heads"] if num_kv_heads is None else num_kv_heads,
        hidden_act="silu",
        rms_norm_eps=params["norm_eps"],
        rope_theta=params.get("rope_theta", DEFAULT_ROPE_THETA),
        tie_word_embeddings=False,
        **fields,
    )


def _multiple_of(dim: int, intermediate_size: int) -> int:
    """A `multiple_of` for which Meta's rule gives `intermediate_size` (LLaMA's 256 when it does)."""
    divisors = [m for m in range(intermediate_size, 0, -1) if intermediate_size % m == 0]
    for multiple_of in (256, *divisors):
        if feed_forward_size(dim, multiple_of) == intermediate_size:
            return multiple_of
    raise ValueError(
        f"intermediate_size {intermediate_size} is below 2/3 of 4 * hidden_size ({int(8 * dim / 3)}): no multiple_of "
        "gives it, and params.json as LLaMA-2 reads it has no ffn_dim_multiplier"
    )


def params_from_llama_config(config: LlamaConfig) -> dict[str, Any]:
    """The `params.json` dict of a `LlamaConfig` (LLaMA-2's fields; `vocab_size` -1, the tokenizer's).

    Raises:
        ValueError: something Meta's LLaMA-2 cannot express (biases, RoPE scaling, tied embeddings, a width the
            `multiple_of` rule cannot give).
    """
    rope = dict(config.rope_parameters or {})
    if rope.get("rope_type", "default") != "default" or config.attention_bias or config.mlp_bias:
        raise ValueError("Meta's LLaMA-2 layout has no RoPE scaling and no biases; this LlamaConfig uses them")
    if config.tie_word_embeddings:
        raise ValueError("Meta's LLaMA-2 layout keeps output.weight apart from tok_embeddings.weight; this ties them")
    params: dict[str, Any] = {
        "dim": config.hidden_size,
        "multiple_of": _multiple_of(config.hidden_size, config.intermediate_size),
        "n_heads": config.num_attention_heads,
        "n_layers": config.num_hidden_layers,
        "norm_eps": config.rms_norm_eps,
        "vocab_size": -1,
    }
    if config.num_key_value_heads != config.num_attention_heads:
        params["n_kv_heads"] = config.num_key_value_heads
    rope_theta = rope.get("rope_theta", DEFAULT_ROPE_THETA)
    if rope_theta != DEFAULT_ROPE_THETA:
        params["rope_theta"] = rope_theta
    return params
