"""Length- and modality-grouped sampling (official `mplug_owl2_trainer.py` `LengthGroupedSampler`
and `get_modality_length_grouped_indices`, from LLaVA).

Samples of similar length share a batch so padding stays small, and, with modality grouping,
image samples and text-only samples fill separate batches. Each epoch's order is a pure function
of `(seed, epoch)`; every rank builds the same global order and takes its own share of each
megabatch, so ranks never overlap. Shares are dealt so that their total lengths stay even, as the
official `split_to_even_chunks` does: with packed rows every rank then gets about as many tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def _megabatches(indices: list[int], lengths: list[int], size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle `indices`, cut them into chunks of `size`, sort each chunk longest first."""
    order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    return [sorted(chunk, key=lambda i: abs(lengths[i]), reverse=True) for chunk in chunks]


def deal_to_ranks(megabatch: list[int], lengths: list[int], world_size: int) -> list[list[int]]:
    """Split a megabatch into `world_size` shares of equal size whose total lengths stay close.

    Samples go, longest first, each to the share with the smallest total length that still has room.
    With padded batches every rank waits for the megabatch's longest sample anyway; with packed rows
    (a rank's cost is its token count) a contiguous split would hand rank 0 the most tokens every step.

    Args:
        megabatch: Sample indices; their count must be a multiple of `world_size`.
        lengths: Lengths by sample index (signed by modality; only the size counts).
        world_size: Number of shares.

    Returns:
        `world_size` lists; share `r` is rank `r`'s.
    """
    if len(megabatch) % world_size:
        raise ValueError(f"a megabatch of {len(megabatch)} samples does not split into {world_size} equal shares")
    per_rank = len(megabatch) // world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for index in sorted(megabatch, key=lambda i: abs(lengths[i]), reverse=True):
        rank = min((r for r in range(world_size) if len(shares[r]) < per_rank), key=totals.__getitem__)
        shares[rank].append(index)
        totals[rank] += abs(lengths[index])
    return shares


def grouped_indices(
    lengths: list[int], batch_size: int, world_size: int, generator: torch.Generator, by_modality: bool = True
) -> list[int]:
    """A global order in which every run of `batch_size * world_size` holds similar lengths.

    Args:
        lengths: One per sample; positive for samples with images, negative for text-only ones.
        batch_size: Per-rank batch size.
        world_size: Number of ranks.
        generator: Source of randomness.
        by_modality: Keep image and text-only samples in separate megabatches.

    Returns:
        A permutation of `range(len(lengths))`.
    """
    size = batch_size * world_size
    if by_modality:
        image = [i for i, n in enumerate(lengths) if n > 0]
        text = [i for i, n in enumerate(lengths) if n <= 0]
        groups = _megabatches(image, lengths, size, generator) + _megabatches(text, lengths, size, generator)
    else:
        groups = _megabatches(list(range(len(lengths))), lengths, size, generator)
    # full megabatches in random order; the (at most two) partial ones go last
    full = [g for g in groups if len(g) == size]
    partial = [g for g in groups if len(g) < size]
    full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for group in full + partial for i in group]


class LengthGroupedSampler(Sampler[int]):
    """Yields this rank's sample indices, grouped by length (and modality).

    Example:
        >>> sampler = LengthGroupedSampler(dataset.lengths, batch_size=8, seed=0)
        >>> loader = DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=collator)
        >>> sampler.set_epoch(1)  # a new order, the same on every rank
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        by_modality: bool = True,
    ):
        """Build the sampler.

        Args:
            lengths: `SupervisedDataset.lengths` (signed by modality).
            batch_size: Per-rank batch size.
            world_size: Number of data-parallel ranks.
            rank: This rank, in `[0, world_size)`.
            seed: Seed of every epoch's order.
            by_modality: Keep image and text-only samples in separate batches.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.by_modality = by_modality
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of `epoch` (call before each epoch, on every rank)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = grouped_indices(self.lengths, self.batch_size, self.world_size, generator, self.by_modality)
        # pad by wrapping around so every rank gets the same number of samples
        total = len(self) * self.world_size
        order = order + order[: total - len(order)]
        size = self.batch_size * self.world_size
        mine = []
        for start in range(0, total, size):  # every chunk's size is a multiple of world_size, the last one's too
            mine += deal_to_ranks(order[start : start + size], self.lengths, self.world_size)[self.rank]
        return iter(mine)
