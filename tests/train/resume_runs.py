"""Several training runs in one launch, each leaving a record of its optimizer state; for
tests/train/test_resume_world_size.py (a launch costs about 35 s of start-up on 2 CPU cores, a toy run 3 s).

    deepspeed --num_gpus 2 tests/train/resume_runs.py RUNS.json

RUNS.json is a list of `{"argv": [...], "after": path or null}`: `owl2.train.main` argument lists, run one
after the other in the same processes, each once `after` exists (the test writes a folder meanwhile).
Exits with the first non-zero status. With `record_states`, every checkpoint a run saves and every one it
resumes from also leaves `output_dir/states/{saved-<step>,loaded-<step>}.safetensors`: each trainable
parameter's fp32 master weights and Adam moments, whole (gathered from the ZeRO partitions), and Adam's
step. The test imports `record_states` and `read_states` from here for its in-process runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from deepspeed.utils import lazy_init_hp_params_optimizer_state, safe_get_full_fp32_param, safe_get_full_optimizer_state
from safetensors.torch import load_file, save_file

from owl2.train import checkpoint as ckpt

STATES_DIR = "states"
WAIT_S = 300
"""How long a run waits for the folder it needs."""


def optimizer_state(engine) -> dict[str, torch.Tensor]:
    """`<name>.fp32`, `<name>.exp_avg`, `<name>.exp_avg_sq` of each trainable parameter, whole, and `step` (the
    distinct Adam steps of its parameter groups); on CPU. Call on every rank: ZeRO gathers are collective."""
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # torch's AdamW, under ZeRO's wrapper or not
    if engine.zero_optimization_stage() in (1, 2):
        # ZeRO-1/2 link each parameter to its slice of the moments once, after the first parameter group's first
        # step (`_lazy_init_hp_params_optimizer_state`), when the other groups have no moments yet: link again
        for params, flat in zip(engine.optimizer.bit16_groups, engine.optimizer.single_partition_of_fp32_groups):
            lazy_init_hp_params_optimizer_state(params, flat, base.state)
    state = {}
    for name, param in engine.module.named_parameters():
        if not param.requires_grad:
            continue
        fp32 = safe_get_full_fp32_param(param)  # None under ZeRO-0: the optimizer updates the parameter itself
        state[f"{name}.fp32"] = param.detach() if fp32 is None else fp32
        for key in ("exp_avg", "exp_avg_sq"):
            full = safe_get_full_optimizer_state(param, key)
            state[f"{name}.{key}"] = base.state[param][key] if full is None else full
    steps = sorted({float(s["step"]) for s in base.state.values() if "step" in s})
    state["step"] = torch.tensor(steps)
    return {key: value.detach().cpu().clone().contiguous() for key, value in state.items()}


def _write(engine, output_dir: Path, name: str) -> None:
    state = optimizer_state(engine)
    if dist.get_rank() == 0:
        (output_dir / STATES_DIR).mkdir(exist_ok=True)
        save_file(state, str(output_dir / STATES_DIR / f"{name}.safetensors"))


def record_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `save_checkpoint` and `load_checkpoint` also write the optimizer state they saved or loaded."""
    save, load = ckpt.save_checkpoint, ckpt.load_checkpoint

    def save_and_record(engine, output_dir, state, keep=0):
        _write(engine, Path(output_dir), f"saved-{state.step}")
        return save(engine, output_dir, state, keep)

    def load_and_record(engine, folder, universal=False):
        state = load(engine, folder, universal)
        _write(engine, folder.parent, f"loaded-{state.step}")
        return state

    monkeypatch.setattr(ckpt, "save_checkpoint", save_and_record)
    monkeypatch.setattr(ckpt, "load_checkpoint", load_and_record)


def read_states(output_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """A state `record_states` wrote, e.g. `read_states(out, "saved-6")`."""
    return load_file(str(output_dir / STATES_DIR / f"{name}.safetensors"))


if __name__ == "__main__":
    from owl2.train.main import main

    runs = json.loads(Path(sys.argv[-1]).read_text())  # the launcher puts --local_rank first
    with pytest.MonkeyPatch.context() as patch:
        record_states(patch)
        for spec in runs:
            waited = time.perf_counter()
            while spec["after"] and not Path(spec["after"]).exists():
                if time.perf_counter() - waited > WAIT_S:
                    sys.exit(f"{spec['after']}: still missing after {WAIT_S} s")
                time.sleep(0.1)
            started = time.perf_counter()
            status = main(spec["argv"])
            if os.environ.get("RANK") == "0":
                print(f"run took {time.perf_counter() - started:.1f} s (after waiting {started - waited:.1f} s): "
                      f"{spec['argv'][-1]}", flush=True)
            if status:
                sys.exit(status)
