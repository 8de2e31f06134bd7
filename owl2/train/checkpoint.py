"""Resumable checkpoints, written atomically (replaces the official `Trainer._save_checkpoint`).

`checkpoint-<step>/` holds DeepSpeed's engine state (model, optimizer, scheduler; ZeRO shards per
rank) under `engine/`, plus `trainer_state.json` (step, data position) and one `rng-<rank>.pt` per
rank. Everything is written to `.checkpoint-<step>.tmp/` and renamed by rank 0 once every rank has
finished, so a crash mid-save leaves the previous checkpoint as the latest complete one. Assumes
`output_dir` is on a file system shared by all nodes (as DeepSpeed's own default does).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

PATTERN = re.compile(r"^checkpoint-(\d+)$")
ENGINE_DIR, ENGINE_TAG = "engine", "state"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where the run is: what a resumed run needs besides the engine state."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (selects the data order)."""
    samples_in_epoch: int = 0
    """Samples of the current epoch each rank has consumed."""


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*") if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def write_trainer_state(folder: Path, state: TrainerState) -> None:
    """Rank 0's part of a checkpoint: the trainer state (its presence marks the checkpoint complete)."""
    (folder / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")


def save_checkpoint(engine, output_dir: str | Path, state: TrainerState, keep: int = 0) -> Path:
    """Write `checkpoint-<step>/` atomically; call on every rank.

    Args:
        engine: The DeepSpeed engine.
        output_dir: The run folder.
        state: The trainer state after `state.step` optimizer steps.
        keep: Checkpoints to keep, oldest deleted first (0 keeps all).

    Returns:
        The checkpoint folder.
    """
    rank = dist.get_rank()
    final = Path(output_dir) / f"checkpoint-{state.step}"
    tmp = Path(output_dir) / f".checkpoint-{state.step}.tmp"
    if rank == 0 and tmp.exists():
        shutil.rmtree(tmp)  # left by an earlier crash
    dist.barrier()
    engine.save_checkpoint(str(tmp / ENGINE_DIR), tag=ENGINE_TAG)
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    dist.barrier()
    if rank == 0:
        write_trainer_state(tmp, state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep > 0:
            for old in checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    dist.barrier()
    return final


def load_checkpoint(engine, folder: Path) -> TrainerState:
    """Restore the engine (model, optimizer, scheduler), this rank's RNG and the trainer state; every rank."""
    path, _ = engine.load_checkpoint(str(folder / ENGINE_DIR), tag=ENGINE_TAG)
    if path is None:
        raise FileNotFoundError(f"{folder / ENGINE_DIR}: DeepSpeed found no engine state to resume from")
    rng = folder / f"rng-{dist.get_rank()}.pt"
    if rng.is_file():  # a different world size resumes with fresh per-rank RNG
        _set_rng_state(torch.load(rng, weights_only=False))
    return TrainerState(**json.loads((folder / STATE_FILE).read_text()))
