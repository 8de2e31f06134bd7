"""The shared splice and positions (owl2.models.multimodal): several modalities, blocks of different lengths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from owl2 import IGNORE_INDEX
from owl2.models.multimodal import ModalityTokens, positions_from_mask, splice_modality_tokens

A, B = -300, -301  # two modalities' placeholders
K = {A: 3, B: 5}  # tokens per input: the blocks differ in length by modality
MODALITY_ID = {A: 1, B: 2}
ROWS = [[1, A, 2, 3], [4, 5], [6, B, 7, A, 8], [B, B, 9]]  # one of each, text only, both, two of one
WIDTH = 4


def _blocks(seed: int = 0) -> dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    count = {p: sum(row.count(p) for row in ROWS) for p in (A, B)}
    return {p: torch.randn(count[p], K[p], WIDTH, generator=generator) for p in (A, B)}


def _modalities(blocks) -> list[ModalityTokens]:
    return [
        ModalityTokens(name, p, MODALITY_ID[p], blocks[p], inputs=f"{name} inputs", source=f"inputs[{name!r}]")
        for name, p in (("alpha", A), ("beta", B))
    ]


def _batch(pad_side: str):
    """ROWS padded on `pad_side`; the third row's mask holds 2 (a packed row's sample number), the others 1."""
    width = max(map(len, ROWS))
    ids = torch.zeros(len(ROWS), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(ROWS):
        span = slice(0, len(row)) if pad_side == "right" else slice(width - len(row), width)
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 2 if i == 2 else 1
    labels = (ids + 100).masked_fill(mask == 0, IGNORE_INDEX)
    return ids, mask, labels


def _reference_row(embed, row, blocks, used):
    """The official way, one unpadded row: text embeddings with each input's block in place, and its modality ids."""
    pieces, modality, labels = [], [], []
    for token in row:
        if token in K:
            pieces.append(blocks[token][used[token]])
            used[token] += 1
            modality += [MODALITY_ID[token]] * K[token]
            labels += [IGNORE_INDEX] * K[token]
        else:
            pieces.append(embed(torch.tensor([token])))
            modality.append(0)
            labels.append(token + 100)
    return torch.cat(pieces), torch.tensor(modality), torch.tensor(labels)


@pytest.mark.parametrize("pad_side", ["left", "right"])
def test_each_row_gets_its_blocks_in_order_with_its_padding_on_its_side(pad_side):
    embed = nn.Embedding(16, WIDTH)
    blocks = _blocks()
    ids, mask, labels = _batch(pad_side)
    with torch.no_grad():
        merged = splice_modality_tokens(ids, embed, mask, labels, _modalities(blocks), pad_side)
        extra = [sum(K[t] - 1 for t in row if t in K) for row in ROWS]
        width = ids.shape[1] + max(extra)  # a row's input padding stays, and the shorter rows get more
        assert merged.inputs_embeds.shape == (len(ROWS), width, WIDTH)
        used = {A: 0, B: 0}
        for i, row in enumerate(ROWS):
            embeds, modality, row_labels = _reference_row(embed, row, blocks, used)
            n = len(row) + extra[i]
            real = slice(0, n) if pad_side == "right" else slice(width - n, width)
            pad = slice(n, None) if pad_side == "right" else slice(0, width - n)
            torch.testing.assert_close(merged.inputs_embeds[i, real], embeds, rtol=0, atol=0)
            assert torch.equal(merged.modality_ids[i, real], modality)
            assert torch.equal(merged.labels[i, real], row_labels)
            # Spliced tokens take their placeholder's mask value: 2 in the "packed" row, 1 elsewhere.
            assert merged.attention_mask[i, real].tolist() == [2 if i == 2 else 1] * n
            assert merged.attention_mask[i, pad].sum() == 0 and (merged.labels[i, pad] == IGNORE_INDEX).all()
            assert (merged.modality_ids[i, pad] == 0).all()
        assert used == {A: 2, B: 3}  # every block used exactly once


def test_no_mask_and_no_labels_mean_no_padding_and_no_targets():
    ids = torch.tensor([[1, A, 2]])
    blocks = {A: torch.randn(1, K[A], WIDTH), B: torch.zeros(0, K[B], WIDTH)}
    merged = splice_modality_tokens(ids, nn.Embedding(16, WIDTH), None, None, _modalities(blocks))
    assert merged.attention_mask.tolist() == [[1] * (2 + K[A])] and merged.labels is None
    assert merged.modality_ids.tolist() == [[0] + [1] * K[A] + [0]]


@pytest.mark.parametrize(
    ("ids", "counts", "message"),
    [
        ([[1, A, A]], {A: 1, B: 0}, r"hold 2 alpha placeholders \(-300\) but 1 alpha inputs were given: inputs\["),
        ([[1, 2, 3]], {A: 0, B: 1}, r"hold 0 beta placeholders \(-301\) but 1 beta inputs"),
        ([[1, -7, A]], {A: 1, B: 0}, r"hold 1 negative ids that are no placeholder of this model \({'alpha': -300"),
    ],
)
def test_counts_and_stray_ids_are_refused_by_name(ids, counts, message):
    blocks = {p: torch.zeros(n, K[p], WIDTH) for p, n in counts.items()}
    with pytest.raises(ValueError, match=message):
        splice_modality_tokens(torch.tensor(ids), nn.Embedding(16, WIDTH), None, None, _modalities(blocks))


def test_a_block_of_the_wrong_width_is_refused_with_both_shapes():
    blocks = {A: torch.zeros(1, K[A], WIDTH + 1), B: torch.zeros(0, K[B], WIDTH)}
    message = r"alpha tokens must have shape \(inputs, tokens per input, 4\) .* got \(1, 3, 5\)"
    with pytest.raises(ValueError, match=message):
        splice_modality_tokens(torch.tensor([[1, A]]), nn.Embedding(16, WIDTH), None, None, _modalities(blocks))


def test_positions_count_real_tokens_and_restart_in_packed_rows():
    left_padded = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_mask(left_padded, packed=False).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    packed = torch.tensor([[1, 1, 1, 2, 2, 3, 0]])
    assert positions_from_mask(packed, packed=True).tolist() == [[0, 1, 2, 0, 1, 0, 0]]
