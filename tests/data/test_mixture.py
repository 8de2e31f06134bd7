"""Global batches over several data sets: one source per batch, repeats as configured, deterministic per
(seed, epoch), uniform or the release's round robin."""

from __future__ import annotations

from collections import Counter

import pytest

from owl2.data.mixture import Source, mixture_batches, source_of

SOURCES = [Source("images.jsonl", "image", 40), Source("audio.jsonl", "audio", 22, repeat=3),
           Source("points.jsonl", "point", 13)]  # fmt: skip
BATCH = 4


def test_every_batch_holds_one_source_and_each_sample_comes_repeat_times_at_most():
    batches = mixture_batches(SOURCES, BATCH, seed=0, epoch=0)
    assert all(len(batch) == BATCH for batch in batches)
    assert all(len({source_of(SOURCES, i).name for i in batch}) == 1 for batch in batches)
    seen = Counter(i for batch in batches for i in batch)
    for source, first in zip(SOURCES, (0, 40, 62)):
        counts = [seen[i] for i in range(first, first + source.size)]
        assert max(counts) <= source.repeat
        # each pass drops fewer than one batch: all but size % BATCH samples of a pass are seen
        assert sum(counts) == source.repeat * (source.size - source.size % BATCH)


def test_the_batches_depend_on_seed_and_epoch_only():
    assert mixture_batches(SOURCES, BATCH, seed=3, epoch=1) == mixture_batches(SOURCES, BATCH, seed=3, epoch=1)
    assert mixture_batches(SOURCES, BATCH, seed=3, epoch=1) != mixture_batches(SOURCES, BATCH, seed=3, epoch=2)
    assert mixture_batches(SOURCES, BATCH, seed=3, epoch=1) != mixture_batches(SOURCES, BATCH, seed=4, epoch=1)


def test_uniform_order_mixes_the_sources_over_the_epoch():
    batches = mixture_batches(SOURCES, BATCH, seed=0, epoch=0)
    names = [source_of(SOURCES, batch[0]).name for batch in batches]
    # 10 + 3 x 5 + 3 batches, shuffled together: every source in both halves of the epoch
    assert Counter(names) == {"images.jsonl": 10, "audio.jsonl": 15, "points.jsonl": 3}
    for half in (names[: len(names) // 2], names[len(names) // 2 :]):
        assert {"images.jsonl", "audio.jsonl"} <= set(half)


def test_round_robin_is_the_releases_layout():
    # official `ConcatDataset.get_indices`: one batch of each data set in turn, cut to the shortest
    batches = mixture_batches(SOURCES, BATCH, seed=0, epoch=0, order="round_robin")
    names = [source_of(SOURCES, batch[0]).name for batch in batches]
    assert names == ["images.jsonl", "audio.jsonl", "points.jsonl"] * 3  # points: 13 // 4 = 3 batches


@pytest.mark.parametrize("sources, batch, order, message", [
    ([Source("tiny.jsonl", "audio", 3)], 4, "uniform", "tiny.jsonl: 3 samples, fewer than one global batch of 4"),
    ([Source("a.jsonl", "audio", 8, repeat=0)], 4, "uniform", "a.jsonl: repeat must be at least 1"),
    ([], 4, "uniform", "at least one source"),
    ([Source("a.jsonl", "audio", 8)], 4, "random", "order: expected one of"),
])  # fmt: skip
def test_bad_mixtures_are_refused_by_name(sources, batch, order, message):
    with pytest.raises(ValueError, match=message):
        mixture_batches(sources, batch, seed=0, epoch=0, order=order)
