"""The single-process loop (no launcher): resume equals an uninterrupted run, NaN stops with the step,
a crash mid-save keeps the previous checkpoint, and the run's outputs are in place."""

from __future__ import annotations

import json

import pytest
import torch

from owl2 import Owl2Model
from owl2.train import NonFiniteLossError, run
from owl2.train import checkpoint as ckpt
from owl2.train.metrics import read_metrics
from tests.train.conftest import tiny_config, weights


def test_resume_matches_uninterrupted(tmp_path, toy_init):
    straight = run(tiny_config(1, tmp_path / "straight", "max_steps=4", f"init_from={toy_init}"))
    resumed_dir = tmp_path / "resumed"
    run(tiny_config(1, resumed_dir, "max_steps=4", "stop_at_step=2", f"init_from={toy_init}"))
    assert [c.name for c in ckpt.checkpoints(resumed_dir)] == ["checkpoint-2"]
    resumed = run(tiny_config(1, resumed_dir, "max_steps=4", f"init_from={toy_init}"))  # same command, no stop

    a, b = weights(straight), weights(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert [r["step"] for r in read_metrics(resumed_dir)] == [1, 2, 3, 4]
    assert read_metrics(resumed_dir)[-1]["loss"] == pytest.approx(read_metrics(straight.parent)[-1]["loss"], abs=1e-6)
    assert {"step", "loss", "lr", "samples_per_s", "tokens_per_s"} <= set(read_metrics(resumed_dir)[0])
    state = json.loads((resumed_dir / "checkpoint-4" / ckpt.STATE_FILE).read_text())
    assert state == {"step": 4, "epoch": 1, "samples_in_epoch": 4, "global_batch_size": 4, "seed": 42,
                     "written_by": {"world_size": 1, "zero_stage": 2}}  # 3 global batches of 4 an epoch
    assert (resumed_dir / "loss_curve.png").is_file()
    assert {"tokenizer.json", "preprocessor_config.json", "model.safetensors"} <= {p.name for p in resumed.iterdir()}


def test_nan_loss_stops_naming_the_step(tmp_path, monkeypatch):
    forward, calls = Owl2Model.forward, []

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Owl2Model, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*checkpoint-2"):
        run(tiny_config(1, tmp_path, "max_steps=5", "save_steps=1"))
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "final").exists()


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    write, calls = ckpt.write_trainer_state, []

    def crash_on_second(folder, state, written_by):
        calls.append(state.step)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        write(folder, state, written_by)

    monkeypatch.setattr(ckpt, "write_trainer_state", crash_on_second)
    with pytest.raises(OSError, match="simulated"):
        run(tiny_config(1, tmp_path, "max_steps=3", "save_steps=1"))
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-1"
    assert not (tmp_path / "checkpoint-2").exists()
    monkeypatch.setattr(ckpt, "write_trainer_state", write)
    assert run(tiny_config(1, tmp_path, "max_steps=3", "save_steps=1")).is_dir()  # resumes from step 1
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
