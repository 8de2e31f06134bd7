"""Shared pieces of the training tests: tiny smoke-config overrides, weight/logit comparisons, and an
uninterrupted 3-step run for interrupted ones to match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from owl2 import Owl2Model
from owl2.train import load_train_config, run
from tests.conftest import REPO, toy_images

os.environ.setdefault("DS_ACCELERATOR", "cpu")

SMOKE = {1: REPO / "configs/train/smoke-stage1.yaml", 2: REPO / "configs/train/smoke-stage2.yaml"}
TINY = ["data.synthetic_records=12", "micro_batch_size=4", "save_steps=0", "tensorboard=false", "optim.warmup_steps=1"]
"""Overrides that make a smoke run take seconds: 12 records (3 micro-batches an epoch), batches of 4."""


def tiny_config(stage: int, output_dir: Path, *overrides: str):
    """The smoke config of `stage`, shrunk by TINY, writing into `output_dir`."""
    return load_train_config(SMOKE[stage], [*TINY, f"output_dir={output_dir}", *overrides])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return Owl2Model.from_pretrained(folder).state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    """The models saved in `a` and `b` are bit-identical."""
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=name)


@torch.no_grad()
def logits(folder: Path, with_image: bool) -> torch.Tensor:
    """Logits of the model in `folder` on a fixed prompt, text-only or with one image."""
    model = Owl2Model.from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 60, (1, 12), generator=generator)
    if not with_image:
        return model(input_ids=ids).logits
    ids[0, 1] = model.config.image_token_index
    return model(input_ids=ids, pixel_values=toy_images(1, model.config)).logits


@pytest.fixture(scope="session")
def toy_init(tmp_path_factory) -> Path:
    """A randomly initialised toy model saved as an `Owl2Model` folder (the runs' `init_from`)."""
    from tests.conftest import toy_model

    folder = tmp_path_factory.mktemp("toy-init")
    toy_model(seed=1).save_pretrained(folder)
    return folder


STEPS3 = ["max_steps=3"]
"""The run that interrupted tests stop part-way and resume (3 steps: one epoch of the tiny data)."""


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Path:
    """`final/` of the STEPS3 run done in one go."""
    return run(tiny_config(1, tmp_path_factory.mktemp("uninterrupted"), *STEPS3))
