"""The OneLLM release <-> `OneLLMModel`: pure config and key/tensor maps, no model built.

The release (csuhan/OneLLM, HF `csuhan/OneLLM-7B`) is a folder with `consolidated.00-of-01.pth` (the state
dict of the official `MetaModel`, so every key starts with `llma.`), `params.json` (Meta's LLaMA-2 params)
and `tokenizer.model` (LLaMA-2's sentencepiece model). Mirrors the official `model/LLM/onellm.py`
(`Transformer.__init__` names and sizes every tensor) and `model/meta.py` (`MetaModel`):

- the encoder and the projection module map one to one (`owl2.models.upm` lists the map); only CLIP's class
  token and position table change shape;
- the LLaMA part is Meta's layout, q and k rows permuted to transformers' (`owl2.checkpoint.meta_llama`);
- open_clip's `visual.proj` and what the release leaves of CLIP's text tower (it sets `clip.transformer = None`,
  which keeps open_clip's `token_embedding`, `positional_embedding`, `ln_final`, `text_projection`, `logit_scale`
  in its state dict) are never used by the release's forward: `OneLLMModel` has no place for them, so
  `release_to_onellm` returns them apart, to be kept for export.

Everything the weights tell is read from their shapes (`release_config`); what they cannot (CLIP's heads and
activation, the experts' heads, the audio spectrogram's size and stride, ...) is the release's, overridable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from owl2.checkpoint.keymap import KeyMap
from owl2.checkpoint.meta_llama import META_TO_HF, hf_to_meta, llama_config_from_params, meta_to_hf
from owl2.config import OneLLMConfig, OneLLMProjectionConfig, OneLLMTokenizerConfig, Owl2VisionConfig
from owl2.constants import ONELLM_MODALITIES, ONELLM_PIXEL_MODALITIES

WEIGHTS_FILE = "consolidated.00-of-01.pth"
"""The release's weights: one `torch.save`d state dict (`util/misc.py`, `save_model`: model-parallel rank 0 of 1)."""

PARAMS_FILE = "params.json"
"""The release's LLaMA params (its `config/llama2/7B.json`)."""

TOKENIZER_FILE = "tokenizer.model"
"""The release's sentencepiece model (LLaMA-2's)."""

PREFIX = "llma."
"""Every release key's prefix: `MetaModel.llma`, the `Transformer`."""

CLIP_PREFIX = PREFIX + "clip.visual."
"""The release keys of CLIP's vision tower (open_clip's `VisionTransformer`)."""

UNUSED_RELEASE_KEYS = frozenset(
    PREFIX + "clip." + name
    for name in (
        "visual.proj",  # CLIP's output projection: `clip_encode_image` leaves it out
        "token_embedding.weight",  # the text tower's leftovers: `clip.transformer = None` keeps these
        "positional_embedding",
        "ln_final.weight",
        "ln_final.bias",
        "text_projection",
        "logit_scale",
        "logit_bias",
    )
)
"""Release tensors the release's forward never reads, so `OneLLMModel` has none of them."""

OPEN_CLIP_VIT_L_14: dict[str, Any] = {
    "embed_dim": 768,
    "quick_gelu": True,  # open_clip builds OpenAI's weights (`pretrained='openai'`, the release's) with QuickGELU
    "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
}
"""open_clip's model config `ViT-L-14`, as the release creates it (`create_model_and_transforms('ViT-L-14',
pretrained='openai')`): the universal encoder's default."""

OPEN_CLIP_VISION_DEFAULTS: dict[str, Any] = {
    "image_size": 224,
    "layers": 12,
    "width": 768,
    "head_width": 64,
    "mlp_ratio": 4.0,
    "patch_size": 16,
}
"""open_clip's `CLIPVisionCfg` defaults, for the fields a model config leaves out."""

OPEN_CLIP_LAYER_NORM_EPS = 1e-5
"""open_clip's LayerNorms keep PyTorch's epsilon."""

RELEASE_MAX_POSITIONS = 4096
"""RoPE positions the release precomputes: `max_seq_len * 2` with `MetaModel`'s max_seq_len 2048."""

RELEASE_PAD_TOKEN_ID = 0
"""The release pads with id 0 (and its loss ignores it)."""

TOKENIZER_FIELDS_GIVEN = (
    "audio_num_mel_bins",
    "audio_num_frames",
    "audio_patch_stride",
    "point_group_size",
    "imu_stride",
    "video_num_frames",
    "rgbx_num_frames",
)
"""`OneLLMTokenizerConfig` fields the weights cannot tell: the release's defaults unless given (the position tables
then check the audio and IMU ones). The other fields are read from the weights."""

# (release template without `llma.`, OneLLMModel template); fields in _FIELDS.
_RULES: list[tuple[str, str]] = [
    # universal projection module (`resample_layers`, `routers`, `resample_tokens`, `clip_proj{1,2}`, tags)
    ("resample_layers.{k}.{i}.attention_norm.weight", "projection.experts.{k}.layers.{i}.attn_norm.weight"),
    ("resample_layers.{k}.{i}.attention.w{qkvo}.weight", "projection.experts.{k}.layers.{i}.attn.{qkvo}_proj.weight"),
    ("resample_layers.{k}.{i}.ffn_norm.weight", "projection.experts.{k}.layers.{i}.mlp_norm.weight"),
    ("resample_layers.{k}.{i}.feed_forward.w1.weight", "projection.experts.{k}.layers.{i}.mlp.gate_proj.weight"),
    ("resample_layers.{k}.{i}.feed_forward.w3.weight", "projection.experts.{k}.layers.{i}.mlp.up_proj.weight"),
    ("resample_layers.{k}.{i}.feed_forward.w2.weight", "projection.experts.{k}.layers.{i}.mlp.down_proj.weight"),
    ("resample_tokens.{m}", "projection.modality_tokens.{m}"),
    ("clip_proj1.{m}.0.{p}", "projection.in_proj.{m}.linear.{p}"),
    ("clip_proj1.{m}.1.{p}", "projection.in_proj.{m}.norm.{p}"),
    ("routers.{m}.{fc}.{p}", "projection.routers.{m}.{fc}.{p}"),
    ("clip_proj2.{m}.0.{p}", "projection.out_proj.{m}.linear.{p}"),
    ("clip_proj2.{m}.1.{p}", "projection.out_proj.{m}.norm.{p}"),
    ("start_tag.{m}", "projection.start_tags.{m}"),
    ("end_tag.{m}", "projection.end_tags.{m}"),
    # modality tokenizers and their position tables (`conv1`, `positional_embedding`)
    ("conv1.point.conv1.{p}", "encoder.tokenizers.point.proj.{p}"),
    ("conv1.{tokenized}.{p}", "encoder.tokenizers.{tokenized}.proj.{p}"),
    ("positional_embedding.{m}", "encoder.pos_embeds.{m}"),
    # CLIP ViT-L/14 (open_clip names -> timm names)
    ("clip.visual.class_embedding", "encoder.clip.cls_token"),
    ("clip.visual.positional_embedding", "encoder.clip.pos_embed"),
    ("clip.visual.conv1.weight", "encoder.clip.patch_embed.proj.weight"),
    ("clip.visual.ln_pre.{p}", "encoder.clip.norm_pre.{p}"),
    ("clip.visual.transformer.resblocks.{i}.ln_1.{p}", "encoder.clip.blocks.{i}.norm1.{p}"),
    ("clip.visual.transformer.resblocks.{i}.attn.in_proj_{p}", "encoder.clip.blocks.{i}.attn.qkv.{p}"),
    ("clip.visual.transformer.resblocks.{i}.attn.out_proj.{p}", "encoder.clip.blocks.{i}.attn.proj.{p}"),
    ("clip.visual.transformer.resblocks.{i}.ln_2.{p}", "encoder.clip.blocks.{i}.norm2.{p}"),
    ("clip.visual.transformer.resblocks.{i}.mlp.c_fc.{p}", "encoder.clip.blocks.{i}.mlp.fc1.{p}"),
    ("clip.visual.transformer.resblocks.{i}.mlp.c_proj.{p}", "encoder.clip.blocks.{i}.mlp.fc2.{p}"),
    ("clip.visual.ln_post.{p}", "encoder.clip.norm.{p}"),
]
_FIELDS = {
    "i": r"\d+",
    "k": r"\d+",
    "p": r"weight|bias",
    "qkvo": r"q|k|v|o",
    "fc": r"fc1|fc2",
    "m": "|".join(ONELLM_MODALITIES),
    "tokenized": r"audio|imu|fmri",
}
_RELEASE = KeyMap(_RULES, _FIELDS)

_CLS_TOKEN, _POS_EMBED = "encoder.clip.cls_token", "encoder.clip.pos_embed"
_LLAMA_PREFIXES = ("language_model.", "lm_head.")


def _ours_to_hf(key: str) -> str:
    return "model." + key.removeprefix("language_model.") if key.startswith("language_model.") else key


def _hf_to_ours(key: str) -> str:
    return "language_model." + key.removeprefix("model.") if key.startswith("model.") else key


# -- state dicts ---------------------------------------------------------------------------------------
def release_to_onellm(
    state_dict: Mapping[str, torch.Tensor], config: OneLLMConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Map (part of) a release state dict to `OneLLMModel` keys; works key by key.

    LLaMA's q and k rows are permuted to transformers' order, CLIP's class token and position table get
    timm's leading dims; every other tensor is passed on unchanged (a view, not a copy).

    Returns:
        The `OneLLMModel` tensors, and the release tensors it has no place for (`UNUSED_RELEASE_KEYS`, unchanged).

    Raises:
        KeyError: a key that is not part of the release, named in the message.
    """
    text = config.text_config
    model: dict[str, torch.Tensor] = {}
    unused: dict[str, torch.Tensor] = {}
    llama: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = key.removeprefix(PREFIX) if key.startswith(PREFIX) else None
        ours = None if name is None else _RELEASE.forward(name)
        if key in UNUSED_RELEASE_KEYS:
            unused[key] = tensor
        elif ours == _CLS_TOKEN:
            model[ours] = tensor.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
        elif ours == _POS_EMBED:
            model[ours] = tensor.unsqueeze(0)  # (1 + g*g, D) -> (1, 1 + g*g, D)
        elif ours is not None:
            model[ours] = tensor
        elif name is not None and META_TO_HF.forward(name) is not None:
            llama[name] = tensor
        else:
            raise KeyError(f"unexpected key in a OneLLM release: {key!r}")
    for key, tensor in meta_to_hf(llama, text.num_attention_heads, text.num_key_value_heads).items():
        model[_hf_to_ours(key)] = tensor
    return model, unused


def onellm_to_release(state_dict: Mapping[str, torch.Tensor], config: OneLLMConfig) -> dict[str, torch.Tensor]:
    """Map (part of) a `OneLLMModel` state dict to the release's keys: the exact inverse of `release_to_onellm`.

    Raises:
        KeyError: a key that is not part of `OneLLMModel`, named in the message.
    """
    text = config.text_config
    out: dict[str, torch.Tensor] = {}
    llama: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = _RELEASE.backward(key)
        if key.startswith(_LLAMA_PREFIXES) and META_TO_HF.backward(_ours_to_hf(key)) is not None:
            llama[_ours_to_hf(key)] = tensor
        elif name is None:
            raise KeyError(f"unexpected key in a OneLLMModel checkpoint: {key!r}")
        elif key == _CLS_TOKEN:
            out[PREFIX + name] = tensor.reshape(-1)  # (1, 1, D) -> (D,)
        elif key == _POS_EMBED:
            out[PREFIX + name] = tensor.squeeze(0)  # (1, 1 + g*g, D) -> (1 + g*g, D)
        else:
            out[PREFIX + name] = tensor
    for key, tensor in hf_to_meta(llama, text.num_attention_heads, text.num_key_value_heads).items():
        out[PREFIX + key] = tensor
    return out


def open_clip_to_release(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision tower of an open_clip `CLIP` state dict (`visual.*`) under the release's names; the rest is left out.

    For a release saved without CLIP: its loader takes CLIP from open_clip at construction.

    Raises:
        KeyError: no `visual.*` key at all.
    """
    out = {PREFIX + "clip." + key: tensor for key, tensor in state_dict.items() if key.startswith("visual.")}
    if not out:
        raise KeyError("no visual.* keys: expected the state dict of an open_clip CLIP model (e.g. ViT-L-14)")
    out.pop(CLIP_PREFIX + "proj", None)  # unused by the release, and not part of what is exported
    return out


# -- configs -------------------------------------------------------------------------------------------
def open_clip_vision_config(config: Mapping[str, Any]) -> Owl2VisionConfig:
    """The `Owl2VisionConfig` of an open_clip model config (`{"embed_dim": .., "vision_cfg": {..}, ...}`).

    Heads are `width / head_width`, the MLP `width * mlp_ratio`; `quick_gelu` (open_clip's top-level flag,
    False when absent) picks QuickGELU over GELU.

    Raises:
        ValueError: no `vision_cfg`, or one with a field owl2's ViT cannot express (a timm tower, layer scale, ...).
    """
    if not isinstance(config.get("vision_cfg"), Mapping):
        raise ValueError("an open_clip model config needs a 'vision_cfg' dict (e.g. open_clip's ViT-L-14.json)")
    vision = {**OPEN_CLIP_VISION_DEFAULTS, **config["vision_cfg"]}
    unsupported = sorted(set(vision) - set(OPEN_CLIP_VISION_DEFAULTS) - {"patch_dropout"})  # dropout: training only
    if unsupported:
        raise ValueError(f"open_clip vision_cfg fields {unsupported} have no equivalent in owl2's CLIP ViT")
    image_size = vision["image_size"]
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ValueError(f"open_clip vision_cfg.image_size must be square, got {image_size}")
        image_size = image_size[0]
    width = vision["width"]
    if width % vision["head_width"]:
        raise ValueError(
            f"open_clip vision_cfg.width ({width}) must be a multiple of head_width ({vision['head_width']})"
        )
    return Owl2VisionConfig(
        hidden_size=width,
        intermediate_size=int(width * vision["mlp_ratio"]),
        num_hidden_layers=vision["layers"],
        num_attention_heads=width // vision["head_width"],
        image_size=image_size,
        patch_size=vision["patch_size"],
        hidden_act="quick_gelu" if config.get("quick_gelu", False) else "gelu",
        layer_norm_eps=OPEN_CLIP_LAYER_NORM_EPS,
    )


def _shape(shapes: Mapping[str, tuple[int, ...]], key: str, needed_for: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"no {key} in the release (it gives the {needed_for})")
    return tuple(shapes[key])


def _indices(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> list[int]:
    compiled = re.compile(pattern)
    return sorted({int(match.group(1)) for key in shapes if (match := compiled.match(key))})


def release_modalities(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The modalities a release holds (those with `llma.resample_tokens.{m}`), in the release's order.

    Raises:
        ValueError: no modality, or one that OneLLM does not know, named in the message.
    """
    tokens = PREFIX + "resample_tokens."
    names = [key.removeprefix(tokens) for key in shapes if key.startswith(tokens)]
    unknown = [name for name in names if name not in ONELLM_MODALITIES]
    if unknown:
        raise ValueError(f"{tokens}{unknown[0]}: unknown modality (expected one of {ONELLM_MODALITIES})")
    if not names:
        raise ValueError(f"no {PREFIX}resample_tokens.* in the weights: not a OneLLM release")
    return [m for m in ONELLM_MODALITIES if m in names]


def _tokenizer_config(
    shapes: Mapping[str, tuple[int, ...]], modalities: list[str], width: int, given: Mapping[str, Any]
) -> OneLLMTokenizerConfig:
    """The tokenizers' config: from the weights but for `TOKENIZER_FIELDS_GIVEN`; checked on the position tables."""
    not_given = sorted(set(given) - set(TOKENIZER_FIELDS_GIVEN))
    if not_given:
        raise ValueError(
            f"tokenizer_config: {not_given} cannot be given: the weights tell them (or, for point_sample_on, the "
            f"release fixes it); only {list(TOKENIZER_FIELDS_GIVEN)} can"
        )
    # The release groups points on columns 3:6, the colours (see OneLLMTokenizerConfig.point_sample_on).
    fields: dict[str, Any] = {**given, "point_sample_on": "rgb"}

    def table_tokens(modality: str) -> int:
        return _shape(shapes, f"{PREFIX}positional_embedding.{modality}", f"number of {modality} tokens")[0] - 1

    if "audio" in modalities:
        _, _, rows, cols = _shape(shapes, f"{PREFIX}conv1.audio.weight", "audio patch size")
        if rows != cols:
            raise ValueError(f"{PREFIX}conv1.audio.weight: expected square patches, got {rows} x {cols}")
        fields["audio_patch_size"] = rows
    if "point" in modalities:
        fields["point_num_features"] = _shape(shapes, f"{PREFIX}conv1.point.conv1.weight", "point features")[1]
        fields["point_num_groups"] = table_tokens("point")
    if "imu" in modalities:
        _, channels, kernel = _shape(shapes, f"{PREFIX}conv1.imu.weight", "IMU channels and kernel")
        stride = fields.get("imu_stride", OneLLMTokenizerConfig().imu_stride)
        fields.update(imu_num_channels=channels, imu_kernel_size=kernel)
        fields["imu_num_samples"] = (table_tokens("imu") - 1) * stride + kernel  # the window the table is sized for
    if "fmri" in modalities:
        outputs, voxels = _shape(shapes, f"{PREFIX}conv1.fmri.weight", "fMRI voxels and tokens")
        if outputs % width:
            raise ValueError(f"{PREFIX}conv1.fmri.weight: {outputs} outputs are not whole tokens of width {width}")
        fields.update(fmri_num_voxels=voxels, fmri_num_tokens=outputs // width)
    config = OneLLMTokenizerConfig(**fields)
    for modality in modalities:
        if modality in ONELLM_PIXEL_MODALITIES:
            continue
        if table_tokens(modality) != config.num_tokens(modality):
            free = [name for name in TOKENIZER_FIELDS_GIVEN if name.startswith(modality)]
            remedy = f"pass the {free} it was trained with (tokenizer_config)" if free else "the weights disagree"
            raise ValueError(
                f"{PREFIX}positional_embedding.{modality} has {table_tokens(modality) + 1} rows, but the tokenizer "
                f"config gives {config.num_tokens(modality)} + 1 tokens: {remedy}"
            )
    return config


def release_config(
    params: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    clip_config: Mapping[str, Any] | None = None,
    tokenizer_config: Mapping[str, Any] | None = None,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
) -> OneLLMConfig:
    """The `OneLLMConfig` of a release: `params.json`, the release's tensor shapes, and CLIP's open_clip config.

    Read from the shapes: the LLaMA's vocabulary and SwiGLU width; the modalities; the experts (count, depth,
    width, SwiGLU width); the modality tokens and the router's width; the audio patch, point features and
    groups, IMU channels, kernel and window, fMRI voxels and tokens. Not in the weights, so the release's:
    the experts' 16 heads (`OneLLMProjectionConfig`'s default; the release hard-codes 16), their RMSNorm
    epsilon (params.json's `norm_eps`, which the release passes on), the projections' LayerNorm epsilon,
    sigmoid routing, 4096 RoPE positions, pad id 0, points grouped on "rgb", and `TOKENIZER_FIELDS_GIVEN`.

    Args:
        params: `params.json`.
        shapes: Release key -> shape, the CLIP keys optional.
        clip_config: open_clip model config of the universal encoder (default `OPEN_CLIP_VIT_L_14`).
        tokenizer_config: Values for `TOKENIZER_FIELDS_GIVEN` other than the release's.
        bos_token_id: The tokenizer's BOS id.
        eos_token_id: The tokenizer's EOS id.

    Raises:
        ValueError: a tensor the sizes are read from is missing or inconsistent, named in the message.
    """
    text = llama_config_from_params(
        params,
        vocab_size=_shape(shapes, PREFIX + "tok_embeddings.weight", "vocabulary size")[0],
        intermediate_size=_shape(shapes, PREFIX + "layers.0.feed_forward.w1.weight", "LLaMA's SwiGLU width")[0],
        max_position_embeddings=RELEASE_MAX_POSITIONS,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=RELEASE_PAD_TOKEN_ID,
    )
    vision = open_clip_vision_config(OPEN_CLIP_VIT_L_14 if clip_config is None else clip_config)
    patch_embed = (vision.hidden_size, vision.num_channels, vision.patch_size, vision.patch_size)
    found = tuple(shapes.get(CLIP_PREFIX + "conv1.weight", patch_embed))
    if found != patch_embed:  # CLIP's config is given, not read: check it where the weights can
        given = "open_clip's ViT-L-14 (the default)" if clip_config is None else "the CLIP config given"
        raise ValueError(
            f"{CLIP_PREFIX}conv1.weight has shape {found}, but {given} has width {vision.hidden_size} and patch "
            f"{vision.patch_size}, hence {patch_embed}: pass CLIP's open_clip config"
        )
    modalities = release_modalities(shapes)
    first = modalities[0]
    experts = _indices(shapes, rf"^{re.escape(PREFIX)}resample_layers\.(\d+)\.")
    layers = _indices(shapes, rf"^{re.escape(PREFIX)}resample_layers\.0\.(\d+)\.")
    if not experts or experts != list(range(len(experts))) or not layers:
        raise ValueError(f"expected experts {PREFIX}resample_layers.0, 1, ... holding layers 0, 1, ...; got {experts}")
    block = f"{PREFIX}resample_layers.0.0."
    projection = OneLLMProjectionConfig(
        num_experts=len(experts),
        num_hidden_layers=len(layers),
        hidden_size=_shape(shapes, block + "attention.wq.weight", "experts' width")[0],
        intermediate_size=_shape(shapes, block + "feed_forward.w1.weight", "experts' SwiGLU width")[0],
        rms_norm_eps=text.rms_norm_eps,
        num_modality_tokens=_shape(shapes, f"{PREFIX}resample_tokens.{first}", "number of modality tokens")[1],
        router_hidden_size=_shape(shapes, f"{PREFIX}routers.{first}.fc1.weight", "router's width")[0],
    )
    tokenizers = _tokenizer_config(shapes, modalities, vision.hidden_size, tokenizer_config or {})
    return OneLLMConfig(
        vision_config=vision.to_dict(),
        tokenizer_config=tokenizers.to_dict(),
        projection_config=projection.to_dict(),
        text_config=text.to_dict(),
        modalities=modalities,
    )
