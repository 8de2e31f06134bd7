"""The training sampler: modality-pure megabatches (so ZeRO-3 ranks run the same modules) and resumable positions."""

from __future__ import annotations

import torch

from owl2.data.sampler import deal_to_ranks
from owl2.train.data import ResumableSampler, modality_megabatches
from tests.train.conftest import tiny_config


def test_megabatches_are_full_and_modality_pure():
    lengths = [5] * 11 + [-3] * 3  # 11 image samples, 3 text-only
    megabatches = modality_megabatches(lengths, 4, torch.Generator().manual_seed(0))
    assert all(len(m) == 4 for m in megabatches)
    assert all(len({lengths[i] > 0 for i in m}) == 1 for m in megabatches)
    assert set().union(*megabatches) == set(range(14))


def flat(micro_batches: list[list[int]]) -> list[int]:
    return [i for batch in micro_batches for i in batch]


def test_ranks_split_each_megabatch_and_skip_resumes(tmp_path):
    config = tiny_config(2, tmp_path, "micro_batch_size=2")
    lengths = [5] * 9 + [-3] * 5
    ranks = [ResumableSampler(lengths, config, world_size=2, rank=r) for r in range(2)]
    orders = [flat(s.micro_batches(epoch=0)) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == ranks[0].batches_per_epoch() * 2
    for step in range(0, len(orders[0]), 2):  # both ranks see the same modality at every micro-step
        assert {lengths[i] > 0 for r in range(2) for i in orders[r][step : step + 2]} in ({True}, {False})
    assert flat(ranks[0].micro_batches(epoch=0, start=2)) == orders[0][4:]


def test_ranks_get_even_token_totals(tmp_path):
    # a contiguous split of a sorted megabatch would give rank 0 the longest half every step
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        lengths = torch.randint(1, 200, (32,), generator=generator).tolist()
        shares = deal_to_ranks(list(range(32)), lengths, 4)
        assert [len(s) for s in shares] == [8] * 4 and sorted(i for s in shares for i in s) == list(range(32))
        totals = [sum(lengths[i] for i in s) for s in shares]
        assert max(totals) - min(totals) <= max(lengths), totals
    config = tiny_config(2, tmp_path, "micro_batch_size=4")
    lengths = [1, 2, 3, 4, 50, 60, 70, 80]  # one megabatch of 8 for 2 ranks x 4
    shares = [flat(ResumableSampler(lengths, config, world_size=2, rank=r).micro_batches(epoch=0)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(8))
    assert abs(sum(lengths[i] for i in shares[0]) - sum(lengths[i] for i in shares[1])) <= 10
