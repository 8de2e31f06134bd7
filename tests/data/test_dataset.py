"""SupervisedDataset, Collator and LengthGroupedSampler."""

from __future__ import annotations

import pytest
import torch

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data import Collator, LengthGroupedSampler, RecordError, SupervisedDataset
from owl2.processing import Owl2ImageProcessor, Owl2Processor

from .conftest import chat, save_image, write_jsonl

IMAGE_TOKENS = 9  # the toy preset: 8 queries + the end-of-image embedding


def dataset(path, tokenizer, folder, **kwargs) -> SupervisedDataset:
    processor = Owl2Processor(tokenizer, Owl2ImageProcessor(size=56))
    return SupervisedDataset(path, processor, image_folder=folder, tokens_per_input=IMAGE_TOKENS, **kwargs)


@pytest.fixture()
def mixed(tmp_path):
    """Records with 1, 0 and 2 images, a caption record, and a bad one in the middle."""
    folder = tmp_path / "images"
    folder.mkdir()
    for k, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        save_image(folder / name, 30 + 7 * k, 50 - 5 * k, seed=k)
    good = [
        {"id": "one", "image": "a.png", "conversations": chat("<|image|>\nwhat color is the circle ?", "red")},
        {"id": "text", "conversations": chat("what is one plus one ?", "two")},
        {"id": "two", "image": ["b.png", "c.png"], "conversations": chat("<|image|> <|image|> how many ?", "three")},
        {"id": "cap", "image": "d.png", "caption": "a blue square at the top left ."},
    ]
    bad = {"id": "bad", "image": "missing.png", "conversations": chat("<|image|> what ?")}
    with_bad = write_jsonl(tmp_path / "with_bad.jsonl", good[:2] + [bad] + good[2:])
    clean = write_jsonl(tmp_path / "clean.jsonl", good)
    return with_bad, clean, folder


def test_samples_have_ids_labels_and_images(mixed, tokenizer):
    _, clean, folder = mixed
    ds = dataset(clean, tokenizer, folder)
    counts = [len(ds[i]["inputs"].get("image", ())) for i in range(len(ds))]
    assert counts == [1, 0, 2, 1]
    for i in range(len(ds)):
        sample = ds[i]
        assert (sample["input_ids"] == IMAGE_TOKEN_INDEX).sum() == counts[i]
        assert sample["labels"][sample["input_ids"] == IMAGE_TOKEN_INDEX].eq(IGNORE_INDEX).all()
        assert sample["labels"][-1] == tokenizer.eos_token_id
    caption = ds[3]
    supervised = caption["labels"][caption["labels"] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(supervised) == "a blue square at the top left . </s>"
    assert ds.lengths[0] > 0 and ds.lengths[1] < 0  # signed by modality


def test_skip_policy_counts_and_shifts_nothing(mixed, tokenizer):
    with_bad, clean, folder = mixed
    ds, reference = dataset(with_bad, tokenizer, folder, on_error="skip"), dataset(clean, tokenizer, folder)
    collate = Collator(pad_token_id=tokenizer.pad_token_id)
    batch = collate([ds[i] for i in range(len(ds))])
    expected = collate([reference[i] for i in range(len(reference))])
    assert ds.num_skipped == 1 and ds.skipped == {2: "line 3: image 'missing.png' not found"}
    for key in ("input_ids", "attention_mask", "labels", "pixel_values"):
        assert torch.equal(batch[key], expected[key]), key
    assert collate([None, None]) is None


def test_stop_policy_raises_with_the_reason(mixed, tokenizer):
    with_bad, _, folder = mixed
    ds = dataset(with_bad, tokenizer, folder, on_error="stop")
    assert ds[1]["inputs"] == {}
    with pytest.raises(RecordError, match=r"with_bad.jsonl: line 3: image 'missing.png' not found"):
        ds[2]


def test_too_long_first_exchange_is_a_bad_record(mixed, tokenizer):
    _, clean, folder = mixed
    ds = dataset(clean, tokenizer, folder, max_length=20, on_error="skip")
    assert ds[2] is None and "over max_length 20" in ds.skipped[2]
    assert ds[1] is not None  # the text-only one fits


def test_collator_right_pads_and_keeps_image_order(mixed, tokenizer):
    _, clean, folder = mixed
    ds = dataset(clean, tokenizer, folder)
    samples = [ds[i] for i in range(len(ds))]
    batch = Collator(pad_token_id=0)(samples)
    width = max(len(s["input_ids"]) for s in samples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, width)
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], sample["input_ids"])
        assert batch["input_ids"][row, n:].eq(0).all() and batch["labels"][row, n:].eq(IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
    expected = torch.cat([s["inputs"]["image"] for s in samples if s["inputs"]])  # a.png, b.png, c.png, d.png
    assert batch["pixel_values"].shape == (4, 3, 56, 56) and torch.equal(batch["pixel_values"], expected)
    assert Collator(pad_token_id=0)([samples[1]])["pixel_values"] is None


def test_synthetic_splits_load(synthetic, tokenizer):
    for split in ("stage1", "stage2", "heldout"):
        ds = dataset(synthetic[split], tokenizer, synthetic["images"], on_error="stop")
        batch = Collator(tokenizer.pad_token_id)([ds[i] for i in range(8)])
        assert (batch["input_ids"] == IMAGE_TOKEN_INDEX).sum() == (0 if batch["pixel_values"] is None else len(batch["pixel_values"]))
        assert (batch["input_ids"] >= 0).sum() > 0 and batch["input_ids"].max() < 512


def test_sampler_is_deterministic_grouped_and_splits_ranks():
    lengths = [(-1 if i % 3 == 0 else 1) * (5 + i % 7) for i in range(50)]
    one = list(LengthGroupedSampler(lengths, batch_size=4, seed=1))
    assert one == list(LengthGroupedSampler(lengths, batch_size=4, seed=1))
    assert sorted(one) == list(range(50))
    assert one != list(LengthGroupedSampler(lengths, batch_size=4, seed=2))
    epoch = LengthGroupedSampler(lengths, batch_size=4, seed=1)
    epoch.set_epoch(1)
    assert list(epoch) != one
    full_batches = [one[i : i + 4] for i in range(0, 48, 4)][:-2]  # the partial groups sit at the end
    assert all(len({lengths[i] > 0 for i in batch}) == 1 for batch in full_batches)
    ranks = [list(LengthGroupedSampler(lengths, batch_size=4, world_size=3, rank=r, seed=1)) for r in range(3)]
    assert [len(r) for r in ranks] == [17, 17, 17]
    assert set(ranks[0]) | set(ranks[1]) | set(ranks[2]) == set(range(50))
    assert not set(ranks[0][:12]) & set(ranks[1][:12])
