"""Timing, FLOP and memory helpers for `tools/bench.py` (issue 7; no official counterpart).

The method every benchmark figure follows:
- contenders run in the same process, alternating (A, B, B, A, A, B, ...: the order flips each round
  so neither always runs first), after warm-up calls that are not recorded;
- every call is timed on its own (with `torch.cuda.synchronize` around it on a GPU) and a contender's
  figure is the median over the rounds; comparisons are ratios of medians, with the median of the
  per-round ratios alongside (on a loaded machine the two contenders of one round see the same load);
- FLOPs are counted analytically (`prefill_flops`, `abstractor_flops`), matching the count of
  `torch.utils.flop_counter.FlopCounterMode` (dense attention: causal kernels that skip the upper
  triangle do about half the attention term); `counted_flops` gives that counter the CPU attention
  kernel it does not know (see there).

This module imports only torch and transformers' `LlamaConfig`: it never imports `owl2.models`.
"""

from __future__ import annotations

import inspect
import math
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig

from owl2.config import Owl2AbstractorConfig


@dataclass
class Timing:
    """Seconds per call of one contender, one sample per round."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the rounds were."""
        return (max(self.samples) - min(self.samples)) / self.median


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work; a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, Timing]:
    """Time each callable `repeats` times, alternating between them, after `warmup` unrecorded calls each.

    Round r runs the contenders in their given order when r is even and reversed when r is odd, so
    that no contender always follows the same one (caches, allocator state, CPU frequency).

    Args:
        fns: Contenders by name; each call is one unit of work (e.g. one training step).
        repeats: Recorded rounds; each contender's median is taken over them.
        warmup: Unrecorded calls of each contender before the first round.
        device: Synchronised before and after each call when it is a GPU.

    Returns:
        A `Timing` per name, in the order of `fns`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    timings = {name: Timing() for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            timings[name].samples.append(time.perf_counter() - start)
    return timings


def ratio(timings: Mapping[str, Timing], numerator: str, denominator: str) -> dict[str, float]:
    """Time of `numerator` over time of `denominator`: as a ratio of medians and as the median per-round ratio."""
    a, b = timings[numerator].samples, timings[denominator].samples
    return {
        "ratio_of_medians": timings[numerator].median / timings[denominator].median,
        "median_paired_ratio": statistics.median(x / y for x, y in zip(a, b)),
    }


# -- FLOPs ---------------------------------------------------------------------------------------------


def decoder_layer_matmul_params(config: LlamaConfig) -> int:
    """Weights one LLaMA decoder layer multiplies each token by (one modality branch; norms excluded).

    q and o: `hidden * heads * head_dim` each; k and v: `hidden * kv_heads * head_dim` each (per
    modality, but a token goes through one branch only); the SwiGLU FFN: `3 * hidden * intermediate`.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    kv_width = config.num_key_value_heads * head_dim
    return 2 * config.hidden_size * attn_width + 2 * config.hidden_size * kv_width + 3 * config.hidden_size * config.intermediate_size


def prefill_flops(
    config: LlamaConfig, tokens: int, context: int = 0, batch: int = 1, lm_head_tokens: int | None = None
) -> int:
    """Forward FLOPs of the decoder over `tokens` new tokens that follow `context` cached ones.

        FLOPs = 2 * P_layer * L * T                       (every matmul weight, once per token)
              + 4 * L * (heads * head_dim) * T * (C + T)  (Q K^T and softmax(.) V, dense)
              + 2 * hidden * vocab * T_head               (the LM head, over the positions that get logits)

    with P_layer from `decoder_layer_matmul_params`, L layers, T = `tokens`, C = `context`. The
    attention term is dense (what `FlopCounterMode` counts and what eager/math attention computes);
    causal kernels skip about half of it. Embedding lookups, norms, RoPE and activations are not
    matmuls and are left out (well under 1% at 7B).

    Args:
        config: The decoder's config.
        tokens: New tokens per sequence.
        context: Tokens already in the cache (0 for a prompt's prefill).
        batch: Sequences.
        lm_head_tokens: Positions per sequence that go through the LM head; default all `tokens`.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    layers = config.num_hidden_layers
    head_tokens = tokens if lm_head_tokens is None else lm_head_tokens
    linear = 2 * decoder_layer_matmul_params(config) * layers * tokens
    attention = 4 * layers * attn_width * tokens * (context + tokens)
    head = 2 * config.hidden_size * config.vocab_size * head_tokens
    return batch * (linear + attention + head)


def abstractor_flops(config: Owl2AbstractorConfig, image_tokens: int, text_hidden_size: int) -> int:
    """Forward FLOPs of the visual abstractor for one image of `image_tokens` ViT tokens (class token included).

    Per layer, with Q queries, S = `image_tokens`, width D and FFN width I:
    q and o projections over Q tokens (2 * 2 * Q * D * D), k and v over Q + S (2 * 2 * (Q + S) * D * D),
    attention (4 * Q * (Q + S) * D), the SwiGLU FFN (2 * 3 * Q * D * I); then the projection to the
    LLM width (2 * Q * D * D_llm).
    """
    q, s, d, i = config.num_queries, image_tokens, config.hidden_size, config.intermediate_size
    per_layer = 4 * q * d * d + 4 * (q + s) * d * d + 4 * q * (q + s) * d + 6 * q * d * i
    return config.num_hidden_layers * per_layer + 2 * q * d * text_hidden_size


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one forward call of `fn` as counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls, attention).

    torch's counter has formulas for the CUDA attention kernels only: on the CPU, SDPA dispatches to
    `aten._scaled_dot_product_flash_attention_for_cpu` (torch 2.14 and newer), which it silently counts
    as zero. Where it has no formula for that kernel, the CUDA flash kernel's (`sdpa_flop`, dense
    attention) is lent to it, so that a CPU count means the same as a GPU one.
    """
    from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop

    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    missing = {}
    if cpu_flash is not None and cpu_flash not in flop_registry:
        missing[cpu_flash] = inspect.unwrap(sdpa_flop)  # the shape formula; the counter wraps it again
    with FlopCounterMode(display=False, custom_mapping=missing) as counter:
        fn()
    return counter.get_total_flops()


# -- memory and lengths --------------------------------------------------------------------------------

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's resident high-water mark (VmHWM).

    Writing "5" to `/proc/self/clear_refs` resets VmHWM (Linux >= 4.0); where that is not allowed the
    CPU peak stays the process's lifetime peak, which `peak_memory_bytes` then reports.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device | str) -> int:
    """Peak memory since `reset_peak_memory`: `torch.cuda.max_memory_allocated` on a GPU, peak RSS on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def lognormal_lengths(
    count: int, median: float = 300.0, sigma: float = 0.6, low: int = 32, high: int = 2048, seed: int = 0
) -> list[int]:
    """Sequence lengths shaped like LLaVA-665k's instruction mix: log-normal, most between ~100 and ~600.

    `exp(N(log(median), sigma))`, clipped to `[low, high]`; with the defaults about 80% fall in 100-600.
    """
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(count, generator=generator, dtype=torch.float64) * sigma + math.log(median)
    return [int(min(max(round(math.exp(x)), low), high)) for x in draws.tolist()]
