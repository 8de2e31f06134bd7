"""The official mPLUG-Owl2 release <-> owl2: pure config and key/tensor maps, no model built.

Mirrors the official `configuration_mplug_owl2.py` (config layout), `visual_encoder.py` (ViT and
abstractor names, the per-head fused `query_key_value`, the sin-cos buffers) and `modeling_llama2.py`
(`multiway.{0,1}` branches, 0 = text, 1 = image). Every map works key by key, so a checkpoint can be
converted one shard at a time.

One table (`_RULES`) names each tensor on both sides; the two directions read it each way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import LlamaConfig

from owl2.config import Owl2AbstractorConfig, Owl2Config, Owl2VisionConfig
from owl2.constants import MODALITIES

MODEL_TYPE = "mplug_owl2"
"""`model_type` of an official config.json."""

ARCHITECTURE = "MPLUGOwl2LlamaForCausalLM"
"""The official model class, written to `architectures` on export."""

_ABS = "model.visual_abstractor.encoder.layers.{i}.crossattention."

# (official template, owl2 template): {i} a layer index, {p} weight or bias, {m} a modality (an index in
# official names, a name in ours), other braces one of a few module names (see _FIELDS).
_RULES: list[tuple[str, str]] = [
    # decoder (modeling_llama2.py)
    ("model.embed_tokens.weight", "language_model.embed_tokens.weight"),
    ("model.norm.weight", "language_model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.layers.{i}.self_attn.{attn}.{p}", "language_model.layers.{i}.self_attn.{attn}.{p}"),
    ("model.layers.{i}.self_attn.{kv}.multiway.{m}.{p}", "language_model.layers.{i}.self_attn.{kv}.{m}.{p}"),
    ("model.layers.{i}.{norm}.multiway.{m}.weight", "language_model.layers.{i}.{norm}.{m}.weight"),
    ("model.layers.{i}.mlp.{ffn}.{p}", "language_model.layers.{i}.mlp.{ffn}.{p}"),
    # vision encoder (visual_encoder.py, MplugOwlVisionModel)
    ("model.vision_model.embeddings.cls_token", "vision_model.cls_token"),
    ("model.vision_model.embeddings.patch_embed.weight", "vision_model.patch_embed.proj.weight"),
    ("model.vision_model.embeddings.position_embedding", "vision_model.pos_embed"),
    ("model.vision_model.embeddings.pre_layernorm.{p}", "vision_model.norm_pre.{p}"),
    ("model.vision_model.encoder.layers.{i}.input_layernorm.{p}", "vision_model.blocks.{i}.norm1.{p}"),
    ("model.vision_model.encoder.layers.{i}.self_attn.query_key_value.{p}", "vision_model.blocks.{i}.attn.qkv.{p}"),
    ("model.vision_model.encoder.layers.{i}.self_attn.dense.{p}", "vision_model.blocks.{i}.attn.proj.{p}"),
    ("model.vision_model.encoder.layers.{i}.post_attention_layernorm.{p}", "vision_model.blocks.{i}.norm2.{p}"),
    ("model.vision_model.encoder.layers.{i}.mlp.{fc}.{p}", "vision_model.blocks.{i}.mlp.{fc}.{p}"),
    ("model.vision_model.post_layernorm.{p}", "vision_model.norm.{p}"),
    # visual abstractor (visual_encoder.py, MplugOwlVisualAbstractorModel)
    ("model.visual_abstractor.query_embeds", "abstractor.query_embeds"),
    ("model.visual_abstractor.visual_fc.{p}", "abstractor.proj.{p}"),
    ("model.visual_abstractor.vit_eos", "abstractor.eos_embed"),
    # abstractor layers
    (_ABS + "norm1.{p}", "abstractor.layers.{i}.query_norm.{p}"),
    (_ABS + "normk.{p}", "abstractor.layers.{i}.image_norm.{p}"),
    (_ABS + "attention.query.{p}", "abstractor.layers.{i}.attn.q_proj.{p}"),
    (_ABS + "attention.key.{p}", "abstractor.layers.{i}.attn.k_proj.{p}"),
    (_ABS + "attention.value.{p}", "abstractor.layers.{i}.attn.v_proj.{p}"),
    (_ABS + "output.out_proj.{p}", "abstractor.layers.{i}.attn.o_proj.{p}"),
    (_ABS + "output.norm2.{p}", "abstractor.layers.{i}.mlp_norm.{p}"),
    (_ABS + "output.mlp.w1.{p}", "abstractor.layers.{i}.mlp.gate_proj.{p}"),
    (_ABS + "output.mlp.w3.{p}", "abstractor.layers.{i}.mlp.up_proj.{p}"),
    (_ABS + "output.mlp.ffn_ln.{p}", "abstractor.layers.{i}.mlp.inner_norm.{p}"),
    (_ABS + "output.mlp.w2.{p}", "abstractor.layers.{i}.mlp.down_proj.{p}"),
]

_FIELDS = {
    "i": r"\d+",
    "p": r"weight|bias",
    "attn": r"q_proj|o_proj",
    "kv": r"k_proj|v_proj",
    "norm": r"input_layernorm|post_attention_layernorm",
    "ffn": r"gate_proj|up_proj|down_proj",
    "fc": r"fc1|fc2",
}
_MODALITY_FIELD = {"official": r"\d+", "owl2": "|".join(MODALITIES)}

# The official code computes these buffers; they are dropped on import and recomputed on export.
_OFFICIAL_COMPUTED = re.compile(
    r"^model\.visual_abstractor\.encoder\.layers\.\d+\.crossattention\.attention\.[qk]_pos_embed$"
)
_OFFICIAL_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")
_QKV = re.compile(r"^vision_model\.blocks\.\d+\.attn\.qkv\.(weight|bias)$")
_ABSTRACTOR_Q = re.compile(r"^abstractor\.layers\.(\d+)\.attn\.q_proj\.weight$")


def _compile(template: str, side: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, field in {**_FIELDS, "m": _MODALITY_FIELD[side]}.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{field})")
    return re.compile(f"^{pattern}$")


_TO_OWL2 = [(_compile(official, "official"), ours) for official, ours in _RULES]
_TO_OFFICIAL = [(_compile(ours, "owl2"), official) for official, ours in _RULES]


def _translate(key: str, rules: list[tuple[re.Pattern, str]], to_owl2: bool) -> str | None:
    for pattern, template in rules:
        if match := pattern.match(key):
            fields = match.groupdict()
            if "m" in fields:
                index = int(fields["m"]) if to_owl2 else MODALITIES.index(fields["m"])
                if to_owl2 and index >= len(MODALITIES):
                    return None
                fields["m"] = MODALITIES[index] if to_owl2 else str(index)
            return template.format(**fields)
    return None


# -- the fused ViT qkv --------------------------------------------------------------------------------
def official_qkv_to_timm(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Official `query_key_value` rows `(heads, 3, head_dim)` -> timm's `qkv` rows `(3, heads, head_dim)`."""
    rows = tensor.shape[0]
    grouped = tensor.reshape(num_heads, 3, rows // (3 * num_heads), *tensor.shape[1:])
    return grouped.transpose(0, 1).reshape(tensor.shape).contiguous()


def timm_qkv_to_official(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """timm's `qkv` rows `(3, heads, head_dim)` -> official `query_key_value` rows `(heads, 3, head_dim)`."""
    rows = tensor.shape[0]
    grouped = tensor.reshape(3, num_heads, rows // (3 * num_heads), *tensor.shape[1:])
    return grouped.transpose(0, 1).reshape(tensor.shape).contiguous()


# -- the abstractor's sin-cos buffers -----------------------------------------------------------------
def _sincos_1d_numpy(dim: int, positions: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega  # (dim/2,) float32, as numpy computes it in the official code
    angles = np.einsum("m,d->md", positions.reshape(-1), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def official_pos_embeds(hidden_size: int, num_queries: int, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The abstractor's `q_pos_embed (Q, D)` and `k_pos_embed (1 + g*g, D)` exactly as the official code computes them.

    Same tables as `owl2.models.abstractor.sincos_1d`/`sincos_2d`, but in numpy's float32 arithmetic
    (bit for bit what the official `register_buffer` calls store).
    """
    q_pos = _sincos_1d_numpy(hidden_size, np.arange(num_queries, dtype=np.float32))
    coords = np.arange(grid_size, dtype=np.float32)
    cols, rows = np.meshgrid(coords, coords)  # "xy" indexing: cols varies along axis 1
    k_pos = np.concatenate(
        [_sincos_1d_numpy(hidden_size // 2, cols), _sincos_1d_numpy(hidden_size // 2, rows)], axis=1
    )
    k_pos = np.concatenate([np.zeros([1, hidden_size]), k_pos], axis=0)  # class token row (float64, as official)
    return torch.from_numpy(q_pos).float(), torch.from_numpy(k_pos).float()


# -- state dicts --------------------------------------------------------------------------------------
def official_to_owl2(state_dict: Mapping[str, torch.Tensor], config: Owl2Config) -> dict[str, torch.Tensor]:
    """Map (part of) an official state dict to `Owl2Model` keys; works shard by shard.

    The fused ViT `query_key_value` is permuted to timm's layout; the abstractor's computed
    `q_pos_embed`/`k_pos_embed` buffers and stale `rotary_emb.inv_freq` buffers are dropped.

    Raises:
        KeyError: a key that is not part of the official model, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if _OFFICIAL_COMPUTED.match(key) or _OFFICIAL_IGNORED.search(key):
            continue
        ours = _translate(key, _TO_OWL2, to_owl2=True)
        if ours is None:
            raise KeyError(f"unexpected key in an official mPLUG-Owl2 checkpoint: {key!r}")
        if _QKV.match(ours):
            tensor = official_qkv_to_timm(tensor, config.vision_config.num_attention_heads)
        out[ours] = tensor
    return out


def owl2_to_official(state_dict: Mapping[str, torch.Tensor], config: Owl2Config) -> dict[str, torch.Tensor]:
    """Map (part of) an `Owl2Model` state dict to the official keys; works shard by shard.

    Adds each abstractor layer's `q_pos_embed`/`k_pos_embed` buffers (with that layer's query
    projection), computed as the official code computes them.

    Raises:
        KeyError: a key that is not part of `Owl2Model`, named in the message.
    """
    out: dict[str, torch.Tensor] = {}
    grid = config.vision_config.grid_size
    for key, tensor in state_dict.items():
        if _OFFICIAL_IGNORED.search(key):
            continue
        official = _translate(key, _TO_OFFICIAL, to_owl2=False)
        if official is None:
            raise KeyError(f"unexpected key in an owl2 checkpoint: {key!r}")
        if _QKV.match(key):
            tensor = timm_qkv_to_official(tensor, config.vision_config.num_attention_heads)
        out[official] = tensor
        if match := _ABSTRACTOR_Q.match(key):
            abstractor = config.abstractor_config
            q_pos, k_pos = official_pos_embeds(abstractor.hidden_size, abstractor.num_queries, grid)
            prefix = f"model.visual_abstractor.encoder.layers.{match.group(1)}.crossattention.attention."
            out[prefix + "q_pos_embed"], out[prefix + "k_pos_embed"] = q_pos, k_pos
    return out


# -- configs ------------------------------------------------------------------------------------------
_LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "rope_theta",
    "rope_scaling",
    "attention_bias",
)
_VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_act",
    "layer_norm_eps",
)
_TORCH_LAYER_NORM_EPS = 1e-5  # the official abstractor's norm1/normk/norm2 keep nn.LayerNorm's default


def is_official_config(config: Mapping[str, Any]) -> bool:
    """Whether a config.json dict is the official release's (`model_type` "mplug_owl2")."""
    return config.get("model_type") == MODEL_TYPE


def official_config_to_owl2(config: Mapping[str, Any]) -> Owl2Config:
    """Build the `Owl2Config` of an official config.json dict (LLaMA fields at top level + `visual_config`).

    Raises:
        ValueError: not an official config, or an abstractor the official code itself could not run.
    """
    if not is_official_config(config):
        raise ValueError(f"expected model_type {MODEL_TYPE!r} in an official config, got {config.get('model_type')!r}")
    if "visual_config" not in config:
        raise ValueError("official config has no 'visual_config' (expected {visual_model: ..., visual_abstractor: ...})")
    vision = config["visual_config"]["visual_model"]
    abstractor = config["visual_config"]["visual_abstractor"]
    vision_config = Owl2VisionConfig(**{k: vision[k] for k in _VISION_FIELDS if k in vision})
    encoder_width = abstractor.get("encoder_hidden_size", abstractor["hidden_size"])
    if encoder_width != vision_config.hidden_size or abstractor["hidden_size"] != vision_config.hidden_size:
        raise ValueError(
            f"visual_abstractor.hidden_size ({abstractor['hidden_size']}) and encoder_hidden_size ({encoder_width}) "
            f"must equal visual_model.hidden_size ({vision_config.hidden_size})"
        )
    grid_size = abstractor.get("grid_size") or 32  # the official config's default
    if grid_size != vision_config.grid_size:
        raise ValueError(
            f"visual_abstractor.grid_size ({grid_size}) must equal visual_model.image_size / patch_size "
            f"({vision_config.grid_size}): the official k_pos_embed covers that grid"
        )
    abstractor_config = Owl2AbstractorConfig(
        num_queries=abstractor["num_learnable_queries"],
        hidden_size=abstractor["hidden_size"],
        num_hidden_layers=abstractor["num_hidden_layers"],
        num_attention_heads=abstractor["num_attention_heads"],
        intermediate_size=abstractor["intermediate_size"],
        layer_norm_eps=abstractor.get("layer_norm_eps", 1e-6),
        norm_eps=_TORCH_LAYER_NORM_EPS,
    )
    text_config = LlamaConfig(**{k: config[k] for k in _LLAMA_FIELDS if k in config}, tie_word_embeddings=False)
    return Owl2Config(
        vision_config=vision_config.to_dict(),
        abstractor_config=abstractor_config.to_dict(),
        text_config=text_config.to_dict(),
    )


def owl2_config_to_official(config: Owl2Config) -> dict[str, Any]:
    """The official config.json dict of an `Owl2Config` (what `MPLUGOwl2Config` reads)."""
    text, vision, abstractor = config.text_config, config.vision_config, config.abstractor_config
    if abstractor.norm_eps != _TORCH_LAYER_NORM_EPS:
        raise ValueError(
            f"abstractor_config.norm_eps is {abstractor.norm_eps}, but the official abstractor's norms always use "
            f"{_TORCH_LAYER_NORM_EPS}: the official code could not reproduce this model"
        )
    rope = dict(text.rope_parameters or {})
    rope_theta = rope.pop("rope_theta", 10000.0)
    rope_type = rope.pop("rope_type", "default")
    rope_scaling = None if rope_type == "default" else {"type": rope_type, **rope}
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "hidden_act": text.hidden_act,
        "max_position_embeddings": text.max_position_embeddings,
        "initializer_range": text.initializer_range,
        "rms_norm_eps": text.rms_norm_eps,
        "pad_token_id": text.pad_token_id,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "attention_bias": text.attention_bias,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "visual_config": {
            "visual_model": {
                "hidden_size": vision.hidden_size,
                "intermediate_size": vision.intermediate_size,
                "projection_dim": 768,
                "num_hidden_layers": vision.num_hidden_layers,
                "num_attention_heads": vision.num_attention_heads,
                "num_channels": vision.num_channels,
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
                "hidden_act": vision.hidden_act,
                "layer_norm_eps": vision.layer_norm_eps,
                "attention_dropout": 0.0,
                "initializer_range": 0.02,
                "initializer_factor": 1.0,
                "use_flash_attn": False,
            },
            "visual_abstractor": {
                "num_learnable_queries": abstractor.num_queries,
                "hidden_size": abstractor.hidden_size,
                "num_hidden_layers": abstractor.num_hidden_layers,
                "num_attention_heads": abstractor.num_attention_heads,
                "intermediate_size": abstractor.intermediate_size,
                "attention_probs_dropout_prob": 0.0,
                "initializer_range": 0.02,
                "layer_norm_eps": abstractor.layer_norm_eps,
                "encoder_hidden_size": vision.hidden_size,
                "grid_size": vision.grid_size,
            },
        },
    }
    return out
