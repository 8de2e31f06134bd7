"""Toy OneLLM dimensions, defined once, and builders of the universal encoder, the projection module and the
whole model on them. `configs/model/onellm-toy.json` holds the same numbers (a test checks it)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers import LlamaConfig

from owl2.config import OneLLMConfig, OneLLMProjectionConfig, OneLLMTokenizerConfig, Owl2VisionConfig
from owl2.constants import ONELLM_MODALITIES
from tests.conftest import REPO

TOY_PRESET = REPO / "configs" / "model" / "onellm-toy.json"


@dataclasses.dataclass(frozen=True)
class ToyDims:
    """Every size the OneLLM tests use. The UPM is as wide as CLIP, as in the release (its router needs it)."""

    clip_width: int = 32
    clip_layers: int = 2
    clip_heads: int = 4
    clip_mlp: int = 128
    image_size: int = 28
    patch_size: int = 7  # a 4 x 4 grid: 16 + 1 tokens
    clip_eps: float = 1e-5  # open_clip's LayerNorm (the release's CLIP), not mPLUG-Owl2's 1e-6
    mel_bins: int = 24
    audio_frames: int = 34
    audio_patch: int = 6
    audio_stride: int = 4  # a 5 x 8 grid: 40 tokens
    points: int = 40
    point_groups: int = 8
    point_neighbours: int = 4
    imu_channels: int = 6
    imu_samples: int = 20
    imu_kernel: int = 4  # 17 tokens
    voxels: int = 50
    fmri_tokens: int = 3
    video_frames: int = 3
    experts: int = 3
    expert_layers: int = 2
    expert_heads: int = 4
    expert_mlp: int = 40
    modality_tokens: int = 5
    router_hidden: int = 128  # 4x CLIP's width, as the release fixes it
    llm_width: int = 48
    llm_layers: int = 2
    llm_heads: int = 4  # no GQA: the release's LLaMA-2-7B has none
    llm_mlp: int = 128
    vocab_size: int = 128
    llm_init: float = 0.08  # initializer_range, about 1/sqrt(width) as in the owl2 toy
    rms_eps: float = 1e-5
    layer_norm_eps: float = 1e-5


TOY = ToyDims()
ALL = ONELLM_MODALITIES
FREE = ("clip.cls_token", "clip.pos_embed", "pos_embeds", "modality_tokens", "start_tags", "end_tags")
"""Parameters that belong to no layer (tables, tokens, tags), by name or by ParameterDict."""


def vision_config(dims: ToyDims = TOY) -> Owl2VisionConfig:
    return Owl2VisionConfig(
        hidden_size=dims.clip_width, intermediate_size=dims.clip_mlp, num_hidden_layers=dims.clip_layers,
        num_attention_heads=dims.clip_heads, image_size=dims.image_size, patch_size=dims.patch_size,
        layer_norm_eps=dims.clip_eps,
    )  # fmt: skip


def tokenizer_config(dims: ToyDims = TOY, **overrides) -> OneLLMTokenizerConfig:
    fields = dict(
        audio_num_mel_bins=dims.mel_bins, audio_num_frames=dims.audio_frames, audio_patch_size=dims.audio_patch,
        audio_patch_stride=dims.audio_stride, point_num_groups=dims.point_groups,
        point_group_size=dims.point_neighbours, imu_num_channels=dims.imu_channels, imu_num_samples=dims.imu_samples,
        imu_kernel_size=dims.imu_kernel, fmri_num_voxels=dims.voxels, fmri_num_tokens=dims.fmri_tokens,
        video_num_frames=dims.video_frames,
    )  # fmt: skip
    return OneLLMTokenizerConfig(**{**fields, **overrides})


def projection_config(dims: ToyDims = TOY, **overrides) -> OneLLMProjectionConfig:
    fields = dict(
        num_experts=dims.experts, num_hidden_layers=dims.expert_layers, hidden_size=dims.clip_width,
        num_attention_heads=dims.expert_heads, intermediate_size=dims.expert_mlp, rms_norm_eps=dims.rms_eps,
        layer_norm_eps=dims.layer_norm_eps, num_modality_tokens=dims.modality_tokens,
        router_hidden_size=dims.router_hidden,
    )  # fmt: skip
    return OneLLMProjectionConfig(**{**fields, **overrides})


def text_config(dims: ToyDims = TOY) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=dims.vocab_size, hidden_size=dims.llm_width, intermediate_size=dims.llm_mlp,
        num_hidden_layers=dims.llm_layers, num_attention_heads=dims.llm_heads, num_key_value_heads=dims.llm_heads,
        hidden_act="silu", max_position_embeddings=512, rms_norm_eps=dims.rms_eps, initializer_range=dims.llm_init,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip


def onellm_config(dims: ToyDims = TOY, modalities=ALL, **tokenizer_overrides) -> OneLLMConfig:
    """The whole toy OneLLM (what `configs/model/onellm-toy.json` holds), optionally with tokenizer overrides."""
    return OneLLMConfig(
        vision_config=vision_config(dims), tokenizer_config=tokenizer_config(dims, **tokenizer_overrides),
        projection_config=projection_config(dims), text_config=text_config(dims), modalities=list(modalities),
    )  # fmt: skip


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter a value that matters: weights ~ 1/sqrt(fan-in), norm gains near 1, free tables ~ 0.5.

    Freshly built, norms are 1/0, CLIP's class token ~1e-6 and biases 0, which would hide a wrong key
    or a skipped layer.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            free = name in FREE or name.startswith(tuple(f"{table}." for table in FREE))
            if free:
                param.copy_(0.5 * noise)
            elif param.dim() >= 2:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(0.2 * noise)
    return module


def toy_encoder(modalities=ALL, seed: int = 0, **tokenizer_overrides):
    from owl2.models.universal_encoder import UniversalEncoder

    encoder = UniversalEncoder(vision_config(), tokenizer_config(**tokenizer_overrides), modalities)
    return randomise(encoder, seed).eval()


def toy_projection(modalities=ALL, seed: int = 1, **overrides):
    from owl2.models.upm import UniversalProjection

    upm = UniversalProjection(projection_config(**overrides), modalities, TOY.clip_width, TOY.llm_width)
    return randomise(upm, seed).eval()


def toy_onellm(seed: int = 0, attn_implementation: str = "sdpa", modalities=ALL, **tokenizer_overrides):
    """A toy `OneLLMModel` in eval mode, float32, every parameter randomised (see `randomise`)."""
    from owl2.models.onellm import OneLLMModel

    config = onellm_config(modalities=modalities, **tokenizer_overrides)
    config._attn_implementation = attn_implementation
    model = OneLLMModel(config)
    for offset, part in enumerate((model.encoder, model.projection, model.language_model, model.lm_head)):
        randomise(part, seed + offset)
    return model.eval()  # after the weights change: eval mode precomputes the routers


def toy_inputs(modality: str, batch: int = 2, seed: int = 0, dims: ToyDims = TOY) -> torch.Tensor:
    """A random batch of `modality` in the shape its tokenizer (or CLIP) expects."""
    generator = torch.Generator().manual_seed(seed)
    frames = {"video": dims.video_frames, "rgbd": 2, "rgbn": 2}
    shape = {
        "image": (batch, 3, dims.image_size, dims.image_size),
        "audio": (batch, 1, dims.mel_bins, dims.audio_frames),
        "point": (batch, dims.points, 6),
        "imu": (batch, dims.imu_channels, dims.imu_samples),
        "fmri": (batch, 1, dims.voxels),
    }.get(modality) or (batch, frames[modality], 3, dims.image_size, dims.image_size)
    return torch.randn(shape, generator=generator)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
