"""Global batches drawn from several data sets, one modality per batch (paper section 3.3; official
`data/pretrain_dataset.py`, `ConcatDataset.get_indices`).

OneLLM keeps earlier modalities from being forgotten by training every stage on the data of every modality
aligned so far, each global batch from one data set. The official `get_indices` shuffles each data set
(Python's `random`, seed 0, the same every epoch), cuts it into global batches, and takes one batch of each
data set in turn, truncated to the smallest data set's number of batches: a large data set is mostly unseen,
and a small one sets the length of the run. Its per-data-set repeat factor (`--epochs`) never took effect
(argparse `nargs='+'` zipped with the data sets kept only the first).

Here each `Source` contributes `repeat` shuffled passes over its samples per epoch, cut into whole global
batches (a remainder smaller than a batch waits for the next pass: it is dropped, as the official code does);
then, with `order="uniform"`, the batches of every source are shuffled together, so each step draws a batch
uniformly from all the data seen so far, every sample of a source `repeat` times an epoch. `order=
"round_robin"` keeps the official layout (one batch per source in turn, truncated to the shortest).
Everything is a function of `(seed, epoch)`: a resumed run, on any number of ranks, draws the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

ORDERS = ("uniform", "round_robin")
"""How the sources' batches are interleaved."""


@dataclass(frozen=True)
class Source:
    """One data set of a mixture."""

    name: str
    """What errors and logs call it (its file, say)."""
    modality: str
    """The modality of its inputs ("image", "audio", ... or "text"): every batch holds one."""
    size: int
    """Samples in it."""
    repeat: int = 1
    """Passes over it per epoch (OneLLM's per-data-set `--epochs`, as it was meant): upsamples a small set."""


def _check(sources: Sequence[Source], global_batch_size: int, order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be at least 1, got {global_batch_size}")
    if not sources:
        raise ValueError("a mixture needs at least one source")
    for source in sources:
        if source.repeat < 1:
            raise ValueError(f"{source.name}: repeat must be at least 1, got {source.repeat}")
        if source.size < global_batch_size:
            raise ValueError(
                f"{source.name}: {source.size} samples, fewer than one global batch of {global_batch_size}"
            )


def source_batches(source: Source, offset: int, global_batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """`source.repeat` shuffled passes over one source, cut into whole global batches of indices + `offset`."""
    batches = []
    for _ in range(source.repeat):
        order = (torch.randperm(source.size, generator=generator) + offset).tolist()
        whole = len(order) - len(order) % global_batch_size
        batches += [order[i : i + global_batch_size] for i in range(0, whole, global_batch_size)]
    return batches


def mixture_batches(
    sources: Sequence[Source],
    global_batch_size: int,
    seed: int,
    epoch: int,
    order: Literal["uniform", "round_robin"] = "uniform",
) -> list[list[int]]:
    """The global batches of one epoch, as indices into the sources laid end to end (in `sources` order).

    Args:
        sources: The data sets of every modality seen so far.
        global_batch_size: Samples per optimizer step, all ranks together.
        seed: The run's data seed.
        epoch: Which epoch (each reshuffles).
        order: `"uniform"` (every batch drawn from all the data) or `"round_robin"` (the release's).

    Raises:
        ValueError: An unknown order, no source, a repeat below 1, or a source smaller than one batch.
    """
    _check(sources, global_batch_size, order)
    per_source, offset = [], 0
    for k, source in enumerate(sources):
        generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + k)
        per_source.append(source_batches(source, offset, global_batch_size, generator))
        offset += source.size
    if order == "round_robin":
        rounds = min(len(batches) for batches in per_source)
        return [batches[r] for r in range(rounds) for batches in per_source]
    everything = [batch for batches in per_source for batch in batches]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [everything[i] for i in torch.randperm(len(everything), generator=generator).tolist()]


def source_of(sources: Sequence[Source], index: int) -> Source:
    """The source an index of `mixture_batches` belongs to.

    Raises:
        IndexError: If the index is past the last source.
    """
    offset = 0
    for source in sources:
        if index < offset + source.size:
            return source
        offset += source.size
    raise IndexError(f"index {index} is past the {offset} samples of the mixture")
