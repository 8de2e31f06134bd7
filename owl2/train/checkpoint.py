"""Resumable checkpoints, written atomically and verified on resume (replaces the official
`Trainer._save_checkpoint`).

`checkpoint-<step>/` holds DeepSpeed's engine state (model, optimizer, scheduler; ZeRO shards per
rank) under `engine/`, `trainer_state.json` (step, data position, global batch, and the world size and
ZeRO stage the engine state was written with), one `rng-<rank>.safetensors` per rank, and last
`manifest.json` (every file's size and SHA-256; `owl2.train.manifest`). Everything is
written to `.checkpoint-<step>.tmp/` and renamed by rank 0 once every rank has finished, so a crash
mid-save leaves the previous checkpoint as the latest complete one.

On resume rank 0 checks the newest checkpoint against its manifest; a damaged one (a file missing,
truncated or changed, or no manifest) is named, renamed to `checkpoint-<step>.damaged-<n>` (never
deleted) and the next newest is tried; the other ranks wait and load the one rank 0 chose. A write
that fails (a full disk, a quota, a read-only mount) raises `OutputWriteError` naming the folder, the
space the checkpoint needs and the space free; the partial folder is removed and the previous
checkpoint is left as it was.

A checkpoint resumes on any world size. The data position counts global batches, whose samples do not
depend on the world size (`owl2.train.data.ResumableSampler`), and the global batch is kept: each rank's
gradient accumulation becomes `global_batch_size / (micro_batch_size x world size)`. On another world
size, a partitioned engine state (ZeRO-1/2/3, bf16) is resharded through DeepSpeed's universal checkpoint:
rank 0 converts it into `.checkpoint-<step>.universal.tmp/` (removed once loaded), which the engine,
built with `load_universal`, loads for its own ranks. ZeRO-0 in fp32 keeps the whole state in one file
and loads as it is. The per-rank RNG states are not carried over; each rank is reseeded from
`(seed, step, rank)`. One line is logged saying so.

What stays exact: the weights, fp32 master weights, Adam moments and step, and the LR schedule are the
checkpoint's, bit for bit (the conversion copies tensors); so is the sequence of samples of each step.
What does not: the gradient of a global batch is then summed in another order (over ranks by the
all-reduce, over micro-batches by accumulation), so the steps after the resume agree with an
uninterrupted run only up to float32 rounding. A resume on the same world size loads the checkpoint as
it is and stays bit-identical.

The RNG state is stored without pickle, so that nothing here needs `torch.load(weights_only=False)`:
torch's generator state as a tensor, Python's and numpy's Mersenne Twister states as JSON in the
safetensors metadata. DeepSpeed's own `engine/` files are pickles that DeepSpeed loads itself.
Assumes `output_dir` is on a file system shared by all nodes (as DeepSpeed's own default does).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from owl2.train import engine as ds
from owl2.train.config import ConfigError
from owl2.train.manifest import (
    checkpoint_folders,
    digest_files,
    format_bytes,
    list_files,
    manifest_size,
    move_aside,
    verify,
    write_manifest,
)

ENGINE_DIR, ENGINE_TAG = "engine", "state"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng-{rank}.safetensors"
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)
"""What a failed write raises: `OSError` from Python's own files, but `RuntimeError` from `torch.save`
(a full tmpfs gives "unexpected pos 576 vs 534" or "write(): fd 3 failed with No space left on
device") and `SafetensorError` from safetensors. See `is_write_failure`."""

log = logging.getLogger(__name__)


class OutputWriteError(OSError):
    """A checkpoint, `final/` or `output_dir` itself could not be written; the message names the folder,
    the space needed and the space free. An `OSError`, so callers handling I/O failures keep doing so."""


@dataclass
class TrainerState:
    """Where the run is: what a resumed run needs besides the engine state, on any world size."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (with `seed`, selects the data order)."""
    samples_in_epoch: int = 0
    """Samples of the current epoch consumed by all ranks together: whole global batches."""
    global_batch_size: int = 0
    """Samples per optimizer step, all ranks together; a run keeps it."""
    seed: int = 0
    """Seed of the data order."""


@dataclass(frozen=True)
class WrittenBy:
    """The ranks that wrote a checkpoint: its engine state is laid out for them."""

    world_size: int
    """Data-parallel ranks."""
    zero_stage: int
    """DeepSpeed ZeRO stage (0: off)."""

    def __str__(self) -> str:
        return f"{self.world_size} rank{'s' if self.world_size > 1 else ''}, ZeRO-{self.zero_stage}"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-<step>/` folders in `output_dir`, oldest first (unverified; see `resume_checkpoint`)."""
    return checkpoint_folders(output_dir)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint folder, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def _on_rank0(decide: Callable[[], Any]) -> Any:
    """Run `decide` on rank 0 and hand its result, or its `OutputWriteError`, to every rank (collective)."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", decide())
        except OutputWriteError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise OutputWriteError(value)
    return value


def check_output_dir(output_dir: str | Path, config_yaml: str) -> None:
    """Create `output_dir` and write its `config.yaml` on rank 0, before any training; every rank.

    Raises:
        OutputWriteError: On every rank, if the folder cannot be created or written to.
    """
    out = Path(output_dir)

    def create() -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(config_yaml)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            raise OutputWriteError(f"output_dir: {out}: cannot create it or write into it ({e.strerror or e}{where}); "
                                   "expected a folder this process can write to") from None

    _on_rank0(create)


def resume_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest good checkpoint to resume from (None: start from scratch); every rank.

    Rank 0 removes temporary folders left by interrupted saves, verifies checkpoints newest first and
    moves each damaged one aside, saying what is wrong with it; the other ranks wait for its choice.

    Raises:
        OutputWriteError: On every rank, if a damaged checkpoint cannot be moved aside.
    """
    out = Path(output_dir)

    def choose() -> str | None:
        for tmp in out.glob(".checkpoint-*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)  # never renamed into place: incomplete by construction
        damaged = False
        for folder in reversed(checkpoints(out)):
            problems = verify(folder)
            if not problems:
                if damaged:
                    log.warning("resuming from %s", folder)
                return str(folder)
            damaged = True
            try:
                aside = move_aside(folder)
            except OSError as e:
                raise OutputWriteError(f"{folder}: damaged ({problems[0]}) and cannot be moved aside "
                                       f"({e.strerror or e}); move or remove it and re-run") from None
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            log.warning("%s: damaged, not resuming from it: %s%s; moved to %s", folder, "; ".join(problems[:3]),
                        more, aside.name)
        if damaged:
            log.warning("%s: no good checkpoint left; starting from scratch", out)
        return None

    chosen = _on_rank0(choose)
    return Path(chosen) if chosen is not None else None


def save_rng_state(path: Path) -> None:
    """Write this process's Python, numpy and torch RNG states to a safetensors file (no pickle)."""
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    metadata = {
        "python": json.dumps([version, list(internal), gauss_next]),
        "numpy": json.dumps([name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)]),
    }
    save_file({"torch": torch.get_rng_state()}, str(path), metadata=metadata)


def load_rng_state(path: Path) -> None:
    """Restore the states `save_rng_state` wrote (no pickle involved)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        torch.set_rng_state(f.get_tensor("torch"))
    version, internal, gauss_next = json.loads(metadata["python"])
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = json.loads(metadata["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))


def write_trainer_state(folder: Path, state: TrainerState, written_by: WrittenBy) -> None:
    """Rank 0's part of a checkpoint: the trainer state and the ranks that wrote the engine state."""
    (folder / STATE_FILE).write_text(json.dumps({**asdict(state), "written_by": asdict(written_by)}, indent=2) + "\n")


def read_trainer_state(folder: Path) -> tuple[TrainerState, WrittenBy]:
    """The trainer state of a checkpoint and the ranks that wrote it.

    Raises:
        ConfigError: If the file predates world-size-free positions (it counted samples per rank), naming
            what is missing.
    """
    path = folder / STATE_FILE
    values = json.loads(path.read_text())
    missing = [key for key in ("global_batch_size", "seed", "written_by") if key not in values]
    if missing:
        raise ConfigError(f"output_dir: {path} has no {', '.join(missing)}: written by an earlier owl2, whose data "
                          "position counted samples per rank; resume it with that version, or use a new output_dir")
    return TrainerState(**{k: v for k, v in values.items() if k != "written_by"}), WrittenBy(**values["written_by"])


def check_resumable(folder: Path, saved: TrainerState, written_by: WrittenBy, global_batch_size: int, seed: int,
                    zero_stage: int) -> None:
    """Check that a run can continue from a checkpoint: the same global batch, data seed and ZeRO stage.

    Args:
        folder: The checkpoint.
        saved: Its trainer state.
        written_by: The ranks that wrote it.
        global_batch_size: The resumed run's global batch.
        seed: The resumed run's seed.
        zero_stage: The resumed run's ZeRO stage.

    Raises:
        ConfigError: Naming the key, the checkpoint's value and the config's.
    """
    kept = [("global_batch_size", saved.global_batch_size, global_batch_size,
             "a run keeps its global batch (0 takes the checkpoint's)"),
            ("seed", saved.seed, seed, "the data order of the rest of the epoch depends on it"),
            ("deepspeed: zero_optimization.stage", written_by.zero_stage, zero_stage,
             "the engine state is laid out for it")]
    for key, theirs, ours, why in kept:
        if theirs != ours:
            raise ConfigError(f"{key}: {ours}, but {folder} was written with {theirs}; {why}. Use {theirs}, or a new "
                              "output_dir")


def needs_universal(folder: Path, written_by: WrittenBy, world_size: int) -> bool:
    """Whether resuming from `folder` on `world_size` ranks goes through a universal checkpoint: the world size
    changed and the engine state is partitioned over the ranks that wrote it (see the module docstring)."""
    return written_by.world_size != world_size and ds.has_partitioned_state(folder / ENGINE_DIR / ENGINE_TAG)


def _digest_shared(folder: Path) -> dict[str, dict[str, int | str]]:
    """Size and SHA-256 of every file in `folder`, the files dealt out over the ranks; all on rank 0 (collective)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    box = [sorted(list_files(folder).items(), key=lambda item: -item[1]) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    names = [name for name, _ in box[0]]  # largest first, dealt round-robin: shares of similar size
    mine = digest_files(folder, names[rank::world])
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    return {name: entry for part in gathered for name, entry in part.items()} if rank == 0 else {}


def is_write_failure(error: BaseException) -> bool:
    """Whether a `WRITE_ERRORS` exception is a failed write: any `OSError` or `SafetensorError`, and a
    `RuntimeError` only from `torch.save` (torch/serialization.py). A collective raises `RuntimeError` too
    when another rank failed and left ("Connection closed by peer"): that is not this rank's write."""
    if not isinstance(error, RuntimeError):
        return isinstance(error, WRITE_ERRORS)
    frames = traceback.extract_tb(error.__traceback__)
    return any(Path(frame.filename).match("torch/serialization.py") for frame in frames)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def write_error(error: BaseException, tmp: Path, name: str, needed: int | None = None, needed_is: str = "",
                kept: str = "") -> OutputWriteError:
    """Remove the partial folder `tmp` of `name` and describe the failed write; the caller raises the result.

    Args:
        error: What the write raised.
        tmp: The temporary folder being written (removed here).
        name: What was being written, e.g. "checkpoint-40" or "final/".
        needed: Bytes the whole of it takes, if known (e.g. the previous checkpoint's size).
        needed_is: Where `needed` comes from, for the message.
        kept: What is left as it was, for the message (e.g. the previous checkpoint).
    """
    # the failed writer (torch's zip writer, say) still holds its file open from a frame of the traceback or
    # of the error that led to it: dropping the frames' locals closes it, else the space would stay taken
    seen: BaseException | None = error
    while seen is not None:
        traceback.clear_frames(seen.__traceback__)
        seen = seen.__cause__ or seen.__context__
    written = _folder_bytes(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    out = tmp.parent
    lines = str(error).strip().splitlines()
    reason = getattr(error, "strerror", None) or (lines[0] if lines else type(error).__name__)
    if isinstance(error, RuntimeError):
        reason = f"torch.save failed: {reason}"
    if getattr(error, "filename", None):
        reason += f" ({error.filename})"
    sizes = f"{format_bytes(written)} had been written"
    if needed is not None:
        sizes = f"it needs about {format_bytes(needed)} ({needed_is}), {sizes}"
    try:
        free = shutil.disk_usage(out).free
        sizes += f", {format_bytes(free)} free there now"
        if needed is not None and free < needed:
            sizes = f"not enough space: {sizes} (free {format_bytes(needed - free)} more)"
    except OSError:
        pass
    kept = f"; {kept} is intact" if kept else ""
    return OutputWriteError(f"{out}: could not write {name}: {reason}; {sizes}. Removed the partial {tmp.name}{kept}")


def save_checkpoint(engine, output_dir: str | Path, state: TrainerState, keep: int = 0) -> Path:
    """Write `checkpoint-<step>/` atomically, its manifest last; call on every rank.

    Args:
        engine: The DeepSpeed engine.
        output_dir: The run folder.
        state: The trainer state after `state.step` optimizer steps.
        keep: Checkpoints to keep, oldest deleted first once the new one is in place (0 keeps all).

    Returns:
        The checkpoint folder.

    Raises:
        OutputWriteError: If a rank's write fails; that rank removes the temporary folder and the previous
            checkpoints stay as they were. Ranks whose writes succeeded are left in one of DeepSpeed's
            barriers, where they wait, or fail as the failed rank exits (gloo: "Connection closed by peer",
            raised as it is), until the launcher stops them.
    """
    rank = dist.get_rank()
    out = Path(output_dir)
    final, tmp = out / f"checkpoint-{state.step}", out / f".checkpoint-{state.step}.tmp"
    previous = latest_checkpoint(out)
    try:
        if rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)  # left by an earlier crash
            (tmp / ENGINE_DIR).mkdir(parents=True)  # here rather than in DeepSpeed, which logs a failure and goes on
        dist.barrier()
        engine.save_checkpoint(str(tmp / ENGINE_DIR), tag=ENGINE_TAG)
        save_rng_state(tmp / RNG_FILE.format(rank=rank))
        dist.barrier()
        if rank == 0:
            write_trainer_state(tmp, state, WrittenBy(dist.get_world_size(), ds.zero_stage(engine)))
        files = _digest_shared(tmp)
        if rank == 0:
            write_manifest(tmp, files)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
    except WRITE_ERRORS as e:
        if not is_write_failure(e):
            raise
        if previous is None:
            raise write_error(e, tmp, final.name) from e
        raise write_error(e, tmp, final.name, manifest_size(previous), f"the size of {previous.name}",
                          previous.name) from e
    if rank == 0 and keep > 0:
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old)
    dist.barrier()
    return final


def _universal_copy(folder: Path) -> Path:
    """Convert the engine state of `folder` into `.checkpoint-<step>.universal.tmp/` on rank 0; every rank.

    Returns:
        The folder to load with `engine.load_checkpoint(folder, tag=ENGINE_TAG)`.

    Raises:
        OutputWriteError: On every rank, if rank 0 cannot write it (the partial folder is removed).
    """
    root = folder.parent / f".{folder.name}.universal.tmp"  # a `.checkpoint-*.tmp`: cleared by `resume_checkpoint`

    def convert() -> str:
        shutil.rmtree(root, ignore_errors=True)
        try:
            ds.to_universal(folder / ENGINE_DIR / ENGINE_TAG, root / ENGINE_TAG)
        except WRITE_ERRORS as e:
            if not is_write_failure(e):
                raise
            raise write_error(e, root, f"the universal copy of {folder.name}", manifest_size(folder),
                              f"the size of {folder.name}", folder.name) from e
        return str(root)

    return Path(_on_rank0(convert))


def _reseed(seed: int, step: int, rank: int) -> None:
    """Seed this rank's RNGs from `(seed, step, rank)`: a resume on another world size has no state of its own."""
    value = (seed * 1_000_003 + step) * 1_009 + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def load_checkpoint(engine, folder: Path, universal: bool = False) -> TrainerState:
    """Restore the engine (model, optimizer, scheduler), this rank's RNG and the trainer state; every rank.

    On the world size the checkpoint was written with, everything loads as it is (bit-identical). On
    another, the engine state is resharded (through a universal copy if `universal`, which the engine
    must have been built for: `owl2.train.engine.resolve_config(..., load_universal=True)`), the RNGs are
    reseeded and one line is logged saying so.

    Args:
        engine: The DeepSpeed engine, built for this run's world size.
        folder: The checkpoint (`resume_checkpoint`'s choice).
        universal: Load through a universal copy of the engine state (`needs_universal`).
    """
    state, written_by = read_trainer_state(folder)
    rank, world = dist.get_rank(), dist.get_world_size()
    root = _universal_copy(folder) if universal else folder / ENGINE_DIR
    try:
        if universal:
            path = ds.load_universal(engine, root, ENGINE_TAG)
        else:
            path, _ = engine.load_checkpoint(str(root), tag=ENGINE_TAG)
    finally:
        if universal:
            dist.barrier()  # every rank has read its part
            if rank == 0:
                shutil.rmtree(root, ignore_errors=True)
    if path is None:
        raise FileNotFoundError(f"{root}: DeepSpeed found no engine state to resume from")
    if written_by.world_size == world:
        load_rng_state(folder / RNG_FILE.format(rank=rank))
        return state
    _reseed(state.seed, state.step, rank)
    if rank == 0:
        now = WrittenBy(world, ds.zero_stage(engine))
        how = ("resharded through a universal checkpoint" if universal
               else "its state is whole (one file), loaded as it is")
        log.warning("%s: written by %s, resumed on %s: %s; the global batch stays %d samples (ranks x accumulation "
                    "x micro-batch = %d x %d x %d); RNGs reseeded", folder.name, written_by, now, how,
                    state.global_batch_size, world, engine.gradient_accumulation_steps(),
                    engine.train_micro_batch_size_per_gpu())
    return state
