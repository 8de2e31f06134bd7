"""Packed rows (several samples back to back) compute what the padded batch computes."""

import pytest
import torch

from owl2 import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data.packing import PackingCollator, expanded_length, pack
from owl2.data.dataset import Collator
from tests.conftest import toy_images, toy_model

IMG = IMAGE_TOKEN_INDEX


def _samples(config):
    rows = [[1, 5, IMG, 7, 8, 9], [1, 10, 11, 12], [1, IMG, 13, IMG, 14, 15, 16], [1, 17, 18]]
    images = toy_images(3, config)
    out, used = [], 0
    for row in rows:
        ids = torch.tensor(row)
        n = row.count(IMG)
        labels = ids.masked_fill(ids == IMG, IGNORE_INDEX)
        labels[:2] = IGNORE_INDEX  # a prompt part, as the templates produce
        out.append({"input_ids": ids, "labels": labels, "inputs": {"image": images[used : used + n]} if n else {}})
        used += n
    return out


def test_first_fit_decreasing_respects_the_capacity():
    rows = pack([5, 3, 8, 2, 7], capacity=10)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 8, 2, 7][i] for i in row) <= 10 for row in rows)
    assert len(rows) == 3


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_loss_and_logits_equal_the_padded_batch(attn_implementation):
    model = toy_model(attn_implementation=attn_implementation)
    samples = _samples(model.config)
    k = model.config.num_image_tokens
    capacity = sum(expanded_length(s["input_ids"], k) for s in samples)
    packed = PackingCollator(0, max_tokens=capacity, num_image_tokens=k)(samples)
    padded = Collator(0)(samples)
    assert packed["input_ids"].shape[0] == 1 and packed["attention_mask"].max() == len(samples)

    with torch.no_grad():
        packed_out = model(**packed)
        padded_out = model(**padded)
    torch.testing.assert_close(packed_out.loss, padded_out.loss, rtol=1e-5, atol=1e-6)

    # Each sample's logits inside the packed row equal its padded row's (samples keep their order).
    offset = 0
    for i, sample in enumerate(samples):
        n = expanded_length(sample["input_ids"], k)
        torch.testing.assert_close(packed_out.logits[0, offset : offset + n], padded_out.logits[i, :n], rtol=1e-4, atol=1e-5)
        offset += n


def test_packing_a_text_only_batch():
    model = toy_model()
    samples = [s for s in _samples(model.config) if not s["inputs"]]
    packed = PackingCollator(0, max_tokens=64, num_image_tokens=model.config.num_image_tokens)(samples)
    assert packed["pixel_values"] is None
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**Collator(0)(samples)).loss, rtol=1e-5, atol=1e-6)
