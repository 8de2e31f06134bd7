"""transformers CLIP vision tower -> the owl2 ViT (timm names): pure config and key/tensor maps.

mPLUG-Owl2 starts its vision encoder from CLIP ViT-L/14 (paper section 3.1; official
`visual_encoder.py`, `MplugOwlVisionModel`, whose weights the official release converted from CLIP).
CLIP's `pre_layrnorm` becomes timm's `norm_pre`, its separate q/k/v projections timm's fused `qkv`,
and its `post_layernorm` timm's final `norm`, which owl2 (like mPLUG-Owl2) applies to every token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from transformers import CLIPVisionConfig

from owl2.config import Owl2VisionConfig

_RENAMES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^embeddings\.patch_embedding\.weight$"), "patch_embed.proj.weight"),
    (re.compile(r"^pre_layrnorm\.(weight|bias)$"), r"norm_pre.\1"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$"), r"blocks.\1.norm1.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$"), r"blocks.\1.attn.proj.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$"), r"blocks.\1.norm2.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$"), r"blocks.\1.mlp.\2.\3"),
    (re.compile(r"^post_layernorm\.(weight|bias)$"), r"norm.\1"),
]
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
# CLIPModel's text tower and projections, and a stale position_ids buffer: not part of the vision tower.
_IGNORED = re.compile(r"^(text_model\.|visual_projection\.|text_projection\.|logit_scale$|embeddings\.position_ids$)")
_PREFIX = "vision_model."  # CLIPModel (and CLIPVisionModel saved by transformers 4) nest the tower here


def clip_to_owl2(state_dict: Mapping[str, torch.Tensor], prefix: str = "vision_model.") -> dict[str, torch.Tensor]:
    """Map a `CLIPVisionModel` or `CLIPModel` state dict to `Owl2Model`'s `vision_model.*` keys (timm names).

    Accepts keys with or without CLIP's `vision_model.` prefix; a `CLIPModel`'s text tower and
    projections are dropped. Needs the whole vision tower at once (q, k and v are fused).

    Args:
        state_dict: CLIP tensors.
        prefix: prefix of the returned keys (`"vision_model."` for `Owl2Model`, `""` for the bare ViT).

    Raises:
        KeyError: an unknown key, or a q/k/v projection without its two siblings, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        name = key.removeprefix(_PREFIX)
        if _IGNORED.match(name) or _IGNORED.match(key):
            continue
        if name == "embeddings.class_embedding":
            out[prefix + "cls_token"] = tensor.reshape(1, 1, -1)
        elif name == "embeddings.position_embedding.weight":
            out[prefix + "pos_embed"] = tensor.unsqueeze(0)  # (1, 1 + g*g, D)
        elif match := _QKV.match(name):
            layer, which, kind = match.groups()
            qkv.setdefault((layer, kind), {})[which] = tensor
        else:
            for pattern, replacement in _RENAMES:
                if pattern.match(name):
                    out[prefix + pattern.sub(replacement, name)] = tensor
                    break
            else:
                raise KeyError(f"unexpected key in a CLIP vision checkpoint: {key!r}")
    for (layer, kind), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            missing = [f"encoder.layers.{layer}.self_attn.{w}_proj.{kind}" for w in "qkv" if w not in parts]
            raise KeyError(f"CLIP checkpoint lacks {missing} (q, k and v are fused into timm's qkv together)")
        out[f"{prefix}blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3*D, ...)
    return out


def clip_vision_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The vision part of a CLIP config.json dict: itself for `CLIPVisionModel`, `vision_config` for `CLIPModel`."""
    if config.get("model_type") == "clip":
        return dict(config["vision_config"])
    if config.get("model_type") == "clip_vision_model":
        return dict(config)
    raise ValueError(
        f"expected a CLIP config (model_type 'clip' or 'clip_vision_model'), got model_type {config.get('model_type')!r}"
    )


def clip_config_to_owl2(config: Mapping[str, Any]) -> Owl2VisionConfig:
    """`Owl2VisionConfig` with a CLIP vision config's dimensions (a `CLIPVisionConfig` dict or a `CLIPConfig` dict)."""
    vision = CLIPVisionConfig.from_dict(clip_vision_config(config))  # fills the fields a config.json left out
    return Owl2VisionConfig(
        hidden_size=vision.hidden_size,
        intermediate_size=vision.intermediate_size,
        num_hidden_layers=vision.num_hidden_layers,
        num_attention_heads=vision.num_attention_heads,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        num_channels=vision.num_channels,
        hidden_act=vision.hidden_act,
        layer_norm_eps=vision.layer_norm_eps,
    )
