"""Owl2Processor: batching with left padding, placeholder checks, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data.synthetic import build_synthetic_tokenizer
from owl2.processing import Owl2ImageProcessor, Owl2Processor


@pytest.fixture(scope="module")
def processor():
    return Owl2Processor(build_synthetic_tokenizer(), Owl2ImageProcessor(size=56))


def test_batch_left_padded_with_images_in_order(processor):
    red, blue = Image.new("RGB", (56, 56), (255, 0, 0)), Image.new("RGB", (56, 56), (0, 0, 255))
    batch = processor(
        text=["USER: <|image|> <|image|> what color ? ASSISTANT:", "USER: what ? ASSISTANT:"], images=[red, blue]
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 10) and ids[0].tolist().count(IMAGE_TOKEN_INDEX) == 2
    assert ids[1, :3].tolist() == [0, 0, 0] and mask[1].tolist() == [0] * 3 + [1] * 7
    assert ids[1, 3] == processor.tokenizer.bos_token_id
    assert batch["pixel_values"].shape == (2, 3, 56, 56)
    assert batch["pixel_values"][0, 0].mean() > batch["pixel_values"][1, 0].mean()  # red first


def test_placeholder_image_mismatch_is_an_error(processor):
    with pytest.raises(ValueError, match=r"1 <\|image\|> placeholders but 0 image inputs"):
        processor(text="USER: <|image|> what ? ASSISTANT:")


def test_apply_chat_matches_training_encoding(processor):
    chat = [{"role": "user", "content": "<|image|>\nwhat color is the circle ?"}]
    batch = processor.apply_chat([chat], images=[Image.new("RGB", (30, 60))])
    text = processor(text=["USER: <|image|> what color is the circle ? ASSISTANT:"], images=[Image.new("RGB", (30, 60))])
    assert torch.equal(batch["input_ids"], text["input_ids"])
    assert (batch["labels"] == IGNORE_INDEX).all()
    red = processor.tokenizer.convert_tokens_to_ids("red")
    assert processor.decode(torch.tensor([1, red, 2, IMAGE_TOKEN_INDEX])) == "red"


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = Owl2Processor.from_pretrained(tmp_path)
    text = "USER: what is two plus one ? ASSISTANT:"
    assert torch.equal(loaded(text=text)["input_ids"], processor(text=text)["input_ids"])
    assert loaded.image_processor.size == 56 and loaded.pad_token_id == 0
