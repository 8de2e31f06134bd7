"""The DeepSpeed side of training: process group, config resolution, engine, consolidated weights.

This is the only module that imports deepspeed (replacing the official `train.py`'s reliance on
the transformers `Trainer` integration and `zero3.json`'s "auto" values). The model never sees it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from torch import nn

from owl2.train.config import ConfigError, TrainConfig


def init_distributed() -> None:
    """Join the launcher's process group, or make a one-process group (gloo) when run without a launcher."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # plain `python tools/train.py` or an in-process call
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "gloo" if get_accelerator().device_name() == "cpu" else get_accelerator().communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend)


def device() -> torch.device:
    """This rank's device (`cpu` under `DS_ACCELERATOR=cpu`)."""
    return torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))


def _fill(section: dict, key: str, value: Any, where: str) -> None:
    """Write `value` where the file says "auto" or nothing; reject a different explicit value."""
    current = section.get(key, "auto")
    if current != "auto" and current != value:
        raise ConfigError(f"deepspeed: {where}{key} is {current!r} but the training config says {value!r}; use \"auto\"")
    section[key] = value


def resolve_config(ds: dict[str, Any], config: TrainConfig, world_size: int, hidden_size: int) -> dict[str, Any]:
    """Fill a DeepSpeed config from the training config: batch sizes, precision, clipping, AdamW, "auto"s.

    Args:
        ds: The loaded DeepSpeed JSON (modified in place and returned).
        config: The training config, the single source of these values.
        world_size: Data-parallel ranks.
        hidden_size: LLM width, for the ZeRO-3 bucket sizes that "auto" stands for (the HF rules).
    """
    _fill(ds, "train_micro_batch_size_per_gpu", config.micro_batch_size, "")
    _fill(ds, "gradient_accumulation_steps", config.gradient_accumulation_steps, "")
    _fill(ds, "train_batch_size", config.micro_batch_size * config.gradient_accumulation_steps * world_size, "")
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
