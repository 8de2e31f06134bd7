"""The DeepSpeed side of training: process group, config resolution, engine, consolidated weights, and the
universal checkpoint a resume on another world size loads.

This is the only module that imports deepspeed (replacing the official `train.py`'s reliance on
the transformers `Trainer` integration and `zero3.json`'s "auto" values). The model never sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.checkpoint import ds_to_universal
from torch import nn

from owl2.train.config import ConfigError, TrainConfig
from owl2.train.launch import free_port


def init_distributed() -> None:
    """Join the launcher's process group, or make a one-process group (gloo) when run without a launcher."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # plain `python tools/train.py` or an in-process call
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    backend = "gloo" if get_accelerator().device_name() == "cpu" else get_accelerator().communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend)
    release_shm_buffer()


def shm_buffer_path(rank: int | None = None) -> Path:
    """The shared-memory file of DeepSpeed's CPU all-reduce for `rank` (this one by default) of this group."""
    rank = int(os.environ["RANK"]) if rank is None else rank
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_{os.environ['MASTER_PORT']}_{rank}"
    return Path("/dev/shm") / name


def release_shm_buffer() -> None:
    """Unlink this rank's buffer of DeepSpeed's CPU all-reduce once every rank has mapped every buffer.

    On one node under the CPU accelerator, DeepSpeed 0.19.8's `deepspeed_shm_comm` op creates a 66 MiB file per
    rank in /dev/shm, maps every rank's, and never unlinks them: each run of N processes left N files in RAM,
    whatever way it ended (on the development machine 158 runs had filled 21 of its 24 GiB and stalled the next
    ones). The mappings stay valid after the unlink, until the processes exit. Each rank maps the others'
    buffers before `init_distributed` returns, so after a barrier each can unlink its own.
    """
    path = shm_buffer_path()
    if not path.exists():  # no shm op: a GPU, several nodes, or no DeepSpeed CPU extension
        return
    dist.barrier()
    path.unlink(missing_ok=True)


def device() -> torch.device:
    """This rank's device (`cpu` under `DS_ACCELERATOR=cpu`)."""
    return torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))


def _fill(section: dict, key: str, value: Any, where: str) -> None:
    """Write `value` where the file says "auto" or nothing; reject a different explicit value."""
    current = section.get(key, "auto")
    if current != "auto" and current != value:
        raise ConfigError(f"deepspeed: {where}{key} is {current!r} but the training config says {value!r}; use \"auto\"")
    section[key] = value


def resolve_config(ds: dict[str, Any], config: TrainConfig, world_size: int, hidden_size: int,
                   load_universal: bool = False) -> dict[str, Any]:
    """Fill a DeepSpeed config from the training config: batch sizes, precision, clipping, AdamW, "auto"s.

    Args:
        ds: The loaded DeepSpeed JSON (modified in place and returned).
        config: The training config, the single source of these values.
        world_size: Data-parallel ranks.
        hidden_size: LLM width, for the ZeRO-3 bucket sizes that "auto" stands for (the HF rules).
        load_universal: The engine will load a universal checkpoint (see `to_universal`).

    Raises:
        ConfigError: If the global batch does not split into micro-batches on `world_size` ranks, or the
            JSON sets a value the training config owns to something else.
    """
    _fill(ds, "train_micro_batch_size_per_gpu", config.micro_batch_size, "")
    _fill(ds, "gradient_accumulation_steps", config.accumulation_steps(world_size), "")
    _fill(ds, "train_batch_size", config.global_batch(world_size), "")
    _fill(ds, "gradient_clipping", config.gradient_clipping, "")
    ds.setdefault("bf16", {})
    _fill(ds["bf16"], "enabled", config.bf16, "bf16.")
    ds.setdefault("fp16", {})["enabled"] = False
    if "optimizer" in ds or "scheduler" in ds:
        raise ConfigError("deepspeed: optimizer and scheduler are set by owl2.train (optim.*), remove them from the JSON")
    ds["optimizer"] = {
        "type": "AdamW",
        "params": {
            "lr": config.optim.lr,
            "betas": list(config.optim.betas),
            "eps": config.optim.eps,
            "weight_decay": config.optim.weight_decay,
        },
    }
    if get_accelerator().device_name() == "cpu":
        # DeepSpeed's fused Adam needs CUDA; on CPU, torch's fused AdamW: one kernel per tensor instead of
        # a dozen (on the toy model, the optimizer step fell from 21 ms to 5 ms of a 128 ms training step)
        ds["optimizer"]["params"].update(torch_adam=True, fused=True)
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    auto = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in zero.items():
        if value == "auto":
            if key not in auto:
                raise ConfigError(f"deepspeed: zero_optimization.{key} is \"auto\" but owl2.train has no rule for it")
            zero[key] = auto[key]
    ds.setdefault("steps_per_print", 10**9)  # the trainer prints its own progress
    # set by the trainer, not the JSON: only a resume on another world size loads a universal checkpoint
    ds.setdefault("checkpoint", {})["load_universal"] = load_universal
    if trainer_clips(ds):
        ds["gradient_clipping"] = 0.0  # `config.gradient_clipping` is applied by the trainer instead
    return ds


def trainer_clips(ds: dict[str, Any]) -> bool:
    """Whether the trainer clips gradients itself rather than DeepSpeed: ZeRO-0 in fp32.

    There DeepSpeed clips with a Python loop over the tensors (5% of the toy model's step on CPU) and
    keeps no norm to report; torch's foreach `clip_grad_norm_` does the same arithmetic on the same
    all-reduced gradients in a few kernels and returns the norm. Under ZeRO-1/2/3 or bf16, DeepSpeed's
    optimizer wrapper owns the gradients (partitions or fp32 copies), clips them and reports the norm.
    """
    return ds["zero_optimization"].get("stage", 0) == 0 and not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]


def build_engine(
    model: nn.Module,
    groups: list[dict],
    ds_config: dict[str, Any],
    scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler],
):
    """Wrap the model in a DeepSpeed engine with AdamW over `groups` and the given scheduler factory."""
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds_config, lr_scheduler=scheduler, dist_init_required=False
    )
    return engine


def has_partitioned_state(engine_dir: Path) -> bool:
    """Whether a DeepSpeed checkpoint's state is split over the ranks that wrote it: ZeRO-1/2/3 and bf16
    write one `*optim_states.pt` per rank; ZeRO-0 in fp32 writes one file any world size can load."""
    return any(engine_dir.glob("*optim_states.pt"))


def to_universal(engine_dir: Path, out: Path) -> None:
    """Convert a partitioned DeepSpeed checkpoint into a universal one, loadable on any world size.

    DeepSpeed's `ds_to_universal` (the `python -m deepspeed.checkpoint.ds_to_universal` command) gathers
    each parameter's fp32 master weights and Adam moments from the ranks' partitions into one file per
    parameter and state (`zero/<name>/{fp32,exp_avg,exp_avg_sq,step}.pt`); an engine built with
    `load_universal` cuts them up for its own ranks. Tensors are copied, never recomputed. Runs in this
    process, in one worker (no process pool), its progress output kept out of the training log.

    Args:
        engine_dir: The checkpoint's tag folder (`engine/state`: `mp_rank_*`, `*optim_states.pt`).
        out: The tag folder to write (`<root>/state`: load it with `engine.load_checkpoint(root, tag="state")`).

    Raises:
        RuntimeError: If DeepSpeed cannot convert it; the message ends with DeepSpeed's last output lines.
    """
    args = argparse.Namespace(input_folder=str(engine_dir), output_folder=str(out), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # the version tag DeepSpeed only writes for Megatron
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            ds_to_universal.main(args)
    except (AssertionError, KeyError, ValueError, FileNotFoundError) as e:  # its checks; a failed write propagates
        tail = " | ".join(output.getvalue().strip().splitlines()[-3:])
        raise RuntimeError(f"{engine_dir}: DeepSpeed could not convert it to a universal checkpoint "
                           f"({type(e).__name__}: {e}); its output ended: {tail}") from e


def load_universal(engine, root: Path, tag: str) -> str | None:
    """`engine.load_checkpoint` of a universal checkpoint (`to_universal`), with DeepSpeed's ZeRO-3 loader fixed.

    DeepSpeed 0.19.8's ZeRO-3 universal loader (`load_hp_checkpoint_state_from_checkpoint_dir_stage3`) hands
    every sub-group one and the same `step` tensor, which torch's AdamW then advances once per sub-group
    a step (the bias correction runs ahead: the toy model's 8 sub-groups, resumed at step 2, were at step
    18 after two more), and gives
    every parameter group the first group's hyperparameters (learning rate, weight decay: layer decay and
    no-decay groups differ). Here each sub-group gets its own step and each group the hyperparameters
    saved for it, as the ZeRO-1/2 loader does.

    Args:
        engine: An engine built with `resolve_config(load_universal=True)`.
        root: The folder holding the universal checkpoint's tag folder.
        tag: Its name.

    Returns:
        The file DeepSpeed loaded, or None if it found nothing to load.
    """
    path, _ = engine.load_checkpoint(str(root), tag=tag)
    if path is None or zero_stage(engine) != 3:
        return path
    adam = engine.optimizer.optimizer
    for state in adam.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()
    # the file DeepSpeed's loader has just read, written by `to_universal` into this run's folder
    saved = torch.load(root / tag / "zero" / "optimizer_state.pt", map_location="cpu", weights_only=False)
    for group, saved_group in zip(adam.param_groups, saved["optimizer_state_dict"]["param_groups"], strict=True):
        group.update({key: value for key, value in saved_group.items() if key != "params"})
    return path


def zero_stage(engine) -> int:
    """The engine's ZeRO stage (0 when off)."""
    return engine.zero_optimization_stage()


@torch.no_grad()
def consolidated_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """Full weights on CPU on rank 0 (None elsewhere); under ZeRO-3 gathered one module at a time.

    Call on every rank: ZeRO-3 gathering is collective.
    """
    module = engine.module
    rank = dist.get_rank()
    state: dict[str, torch.Tensor] = {}
    for prefix, submodule in module.named_modules():
        params = dict(submodule.named_parameters(recurse=False))
        if not params:
            continue
        with deepspeed.zero.GatheredParameters(list(params.values()), enabled=zero_stage(engine) == 3):
            if rank == 0:
                for name, param in params.items():
                    state[f"{prefix}.{name}" if prefix else name] = param.detach().cpu().clone()
    if rank == 0:
        persistent = set(module.state_dict())
        for name, buffer in module.named_buffers():
            if name in persistent:
                state[name] = buffer.detach().cpu().clone()
    return state if rank == 0 else None
