"""Verified checkpoints: every file in the manifest, each kind of damage named, a damaged checkpoint moved
aside (not deleted) and the run resumed bit-identically from the one before it, and the RNG state stored
without pickle."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from owl2.train import checkpoint as ckpt
from owl2.train import manifest, run
from owl2.train.metrics import read_metrics
from tests.train.conftest import STEPS3, assert_same_weights, tiny_config

MODEL_STATES = "engine/state/mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """The STEPS3 run stopped after step 2, with checkpoint-1 and checkpoint-2."""
    out = tmp_path_factory.mktemp("stopped")
    run(tiny_config(1, out, *STEPS3, "stop_at_step=2", "save_steps=1", "save_total_limit=0"))
    return out


@pytest.fixture
def run_copy(stopped, tmp_path) -> Path:
    """A copy of `stopped` to damage."""
    return Path(shutil.copytree(stopped, tmp_path / "run"))


def test_the_manifest_lists_every_file_and_the_rng_state_is_not_a_pickle(stopped):
    folder = stopped / "checkpoint-2"
    files = manifest.read_manifest(folder)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {manifest.MANIFEST_FILE}
    assert {MODEL_STATES, ckpt.STATE_FILE, "rng-0.safetensors"} <= set(files)
    assert files[ckpt.STATE_FILE]["size"] == (folder / ckpt.STATE_FILE).stat().st_size
    assert manifest.verify(folder) == []
    assert not list(folder.glob("rng-*.pt"))
    with safe_open(str(folder / "rng-0.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"torch"} and set(f.metadata()) == {"python", "numpy"}


def damage_missing(folder: Path) -> str:
    (folder / MODEL_STATES).unlink()
    return f"{folder / MODEL_STATES}: missing; the manifest lists"


def damage_truncated(folder: Path) -> str:
    with open(folder / MODEL_STATES, "r+b") as f:
        f.truncate(1000)
    return f"{folder / MODEL_STATES}: 1000 bytes; the manifest says"


def damage_flipped(folder: Path) -> str:
    with open(folder / MODEL_STATES, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    return f"{folder / MODEL_STATES}: sha256 differs from the manifest's"


def damage_no_manifest(folder: Path) -> str:
    (folder / manifest.MANIFEST_FILE).unlink()
    return f"{folder}: no manifest.json"


def damage_bad_manifest(folder: Path) -> str:
    (folder / manifest.MANIFEST_FILE).write_text('{"format": 1, "files": ')
    return f"{folder / manifest.MANIFEST_FILE}: not valid JSON"


@pytest.mark.parametrize("damage", [damage_missing, damage_truncated, damage_flipped, damage_no_manifest,
                                    damage_bad_manifest], ids=lambda f: f.__name__.removeprefix("damage_"))
def test_verify_names_the_file_and_what_is_wrong(run_copy, damage):
    folder = run_copy / "checkpoint-2"
    expected = damage(folder)
    problems = manifest.verify(folder)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert manifest.verify(run_copy / "checkpoint-1") == []


def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(run_copy, uninterrupted, caplog):
    damage_truncated(run_copy / "checkpoint-2")
    damaged_bytes = (run_copy / "checkpoint-2" / MODEL_STATES).read_bytes()
    (run_copy / ".checkpoint-3.tmp").mkdir()  # an interrupted save: removed on resume
    resumed = run(tiny_config(1, run_copy, *STEPS3, "save_steps=1", "save_total_limit=0"))

    assert_same_weights(resumed, uninterrupted)
    assert [r["step"] for r in read_metrics(run_copy)] == [1, 2, 3]
    aside = run_copy / "checkpoint-2.damaged-1"
    assert (aside / MODEL_STATES).read_bytes() == damaged_bytes  # kept as it was, for a post-mortem
    assert [c.name for c in ckpt.checkpoints(run_copy)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert all(manifest.verify(c) == [] for c in ckpt.checkpoints(run_copy))
    assert not (run_copy / ".checkpoint-3.tmp").exists()
    log = caplog.text
    assert f"{run_copy / 'checkpoint-2'}: damaged" in log and "1000 bytes" in log and "checkpoint-2.damaged-1" in log
    assert f"resuming from {run_copy / 'checkpoint-1'}" in log


def test_with_no_good_checkpoint_the_run_starts_from_scratch_saying_so(run_copy, caplog):
    damage_no_manifest(run_copy / "checkpoint-2")
    damage_flipped(run_copy / "checkpoint-1")
    (run_copy / "checkpoint-1.damaged-1").mkdir()  # from an earlier resume: the next number is taken
    assert ckpt.resume_checkpoint(run_copy) is None
    assert ckpt.checkpoints(run_copy) == []
    assert (run_copy / "checkpoint-2.damaged-1").is_dir() and (run_copy / "checkpoint-1.damaged-2").is_dir()
    assert f"{run_copy}: no good checkpoint left; starting from scratch" in caplog.text
    assert manifest.verify(run_copy / "checkpoint-1.damaged-2")[0].endswith("the file changed after it was written")


def test_the_rng_state_round_trips_without_pickle(tmp_path):
    random.gauss(0, 1), np.random.standard_normal(), torch.rand(1)  # gauss caches: states with a cached value
    ckpt.save_rng_state(tmp_path / "rng.safetensors")
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
             torch.rand(3).tolist())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.load_rng_state(tmp_path / "rng.safetensors")
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(),
             torch.rand(3).tolist())
    assert again == first
    with safe_open(str(tmp_path / "rng.safetensors"), framework="pt") as f:
        assert len(json.loads(f.metadata()["numpy"])[1]) == 624  # the Mersenne Twister key, as JSON
