"""Shared toy dimensions and builders: every test builds its models from these, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from owl2 import Owl2Config, Owl2Model

REPO = Path(__file__).resolve().parents[1]
TOY_PRESET = REPO / "configs" / "model" / "owl2-toy.json"


def toy_config(**text_overrides) -> Owl2Config:
    """The toy preset (tiny ViT, abstractor and GQA decoder), optionally with text-config overrides."""
    config = Owl2Config.from_json_file(TOY_PRESET)
    for key, value in text_overrides.items():
        setattr(config.text_config, key, value)
    return config


def toy_model(seed: int = 0, attn_implementation: str = "sdpa", **text_overrides) -> Owl2Model:
    """A randomly initialised toy `Owl2Model` in eval mode, float32, with distinct modality branches."""
    torch.manual_seed(seed)
    config = toy_config(**text_overrides)
    config._attn_implementation = attn_implementation
    model = Owl2Model(config).eval()
    with torch.no_grad():  # make the image branches differ from the text ones, as after training
        for name, param in model.language_model.named_parameters():
            if ".image." in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def toy_images(count: int, config: Owl2Config, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    return torch.randn(count, 3, size, size, generator=generator)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
    # Compiled blocks of one class share dynamo's recompile budget across the models of a process.
    torch._dynamo.reset()
