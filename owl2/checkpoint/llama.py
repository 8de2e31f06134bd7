"""transformers `LlamaForCausalLM` <-> the owl2 decoder: pure key/tensor maps, no model built.

A LLaMA checkpoint starts both modality branches of the decoder: the image K/V projections and
norms begin as copies of the text ones, so on text-only input the result computes exactly what the
source LLaMA computes (mPLUG-Owl2's initialisation, paper section 3.2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from owl2.constants import MODALITIES

_MODALITY_SPECIFIC = re.compile(
    r"^model\.layers\.(\d+)\.(self_attn\.[kv]_proj|input_layernorm|post_attention_layernorm)\.(weight|bias)$"
)
_OURS_MODALITY_SPECIFIC = re.compile(
    r"^language_model\.layers\.(\d+)\.(self_attn\.[kv]_proj|input_layernorm|post_attention_layernorm)\.(\w+)\.(weight|bias)$"
)
_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")


def llama_to_owl2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a `LlamaForCausalLM` state dict to the `language_model.*` and `lm_head.*` keys of `Owl2Model`.

    Modality-specific tensors are copied into every modality branch (clones, so branches can diverge).
    Stale `rotary_emb.inv_freq` buffers are dropped.

    Raises:
        KeyError: a key that is not part of a LLaMA causal LM, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if _IGNORED.search(key):
            continue
        if match := _MODALITY_SPECIFIC.match(key):
            layer, module, kind = match.groups()
            for modality in MODALITIES:
                out[f"language_model.layers.{layer}.{module}.{modality}.{kind}"] = tensor.clone()
        elif key.startswith("model."):
            out["language_model." + key.removeprefix("model.")] = tensor
        elif key.startswith("lm_head."):
            out[key] = tensor
        else:
            raise KeyError(f"unexpected key in a LLaMA checkpoint: {key!r} (expected model.* or lm_head.*)")
    return out


def owl2_to_llama(state_dict: Mapping[str, torch.Tensor], modality: str = "text") -> dict[str, torch.Tensor]:
    """The decoder of an `Owl2Model` state dict as a `LlamaForCausalLM` one, taking `modality`'s branch.

    Vision and abstractor keys are left out.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if match := _OURS_MODALITY_SPECIFIC.match(key):
            layer, module, branch, kind = match.groups()
            if branch == modality:
                out[f"model.layers.{layer}.{module}.{kind}"] = tensor
        elif key.startswith("language_model."):
            out["model." + key.removeprefix("language_model.")] = tensor
        elif key.startswith("lm_head."):
            out[key] = tensor
    return out
