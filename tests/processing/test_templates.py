"""Chat templates, turn-wise tokenization, label masks and truncation."""

from __future__ import annotations

import pytest

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.data.synthetic import build_synthetic_tokenizer
from owl2.processing.templates import TEMPLATES, get_template
from owl2.processing.tokenization import TruncationError, encode_conversation, encode_texts, truncate

CHAT = [
    {"role": "user", "content": "<|image|>\nwhat color is the circle ?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "where is the red circle ?"},
    {"role": "assistant", "content": "top left"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_synthetic_tokenizer()


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_mplug_owl2_render_matches_official_format():
    text = TEMPLATES["mplug_owl2"].render(CHAT)
    assert text == (
        "USER: <|image|>\nwhat color is the circle ? ASSISTANT: red</s>"
        "USER: where is the red circle ? ASSISTANT: top left</s>"
    )
    assert TEMPLATES["mplug_owl2"].render(CHAT[:1], add_generation_prompt=True).endswith("? ASSISTANT:")


def test_vicuna_v1_has_its_system_prompt():
    text = TEMPLATES["vicuna_v1"].render(CHAT[:2])
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant. ")
    assert text.endswith("user's questions. USER: <|image|>\nwhat color is the circle ? ASSISTANT: red</s>")


def test_unknown_template_and_bad_roles():
    with pytest.raises(KeyError, match="unknown chat template 'llama3'"):
        get_template("llama3")
    with pytest.raises(ValueError, match="message 1: expected role 'assistant'"):
        TEMPLATES["mplug_owl2"].render([CHAT[0], CHAT[0]])


def test_labels_supervise_replies_and_eos_only(tokenizer):
    enc = encode_conversation(CHAT, tokenizer, "mplug_owl2")
    user1 = ids(tokenizer, "USER:") + [IMAGE_TOKEN_INDEX] + ids(tokenizer, "what color is the circle ? ASSISTANT:")
    user2 = ids(tokenizer, "USER: where is the red circle ? ASSISTANT:")
    red, top_left = ids(tokenizer, "red"), ids(tokenizer, "top left")
    eos = tokenizer.eos_token_id
    assert enc.input_ids == [tokenizer.bos_token_id] + user1 + red + [eos] + user2 + top_left + [eos]
    ignore = lambda seq: [IGNORE_INDEX] * len(seq)  # noqa: E731
    assert enc.labels == ignore([1] + user1) + red + [eos] + ignore(user2) + top_left + [eos]
    assert enc.turn_ends == [1 + len(user1) + 2, len(enc.input_ids)]
    assert enc.num_images == 1 and enc.expanded_length(9) == len(enc.input_ids) + 8


def test_vicuna_labels_ignore_the_system_prompt(tokenizer):
    enc = encode_conversation(CHAT[:2], tokenizer, "vicuna_v1")
    supervised = [lab for lab in enc.labels if lab != IGNORE_INDEX]
    assert supervised == ids(tokenizer, "red") + [tokenizer.eos_token_id]
    assert len(enc.input_ids) > 30  # the system prompt is there


def test_generation_prompt_is_a_prefix_of_the_training_ids(tokenizer):
    for name in TEMPLATES:
        train = encode_conversation(CHAT, tokenizer, name)
        prompt = encode_conversation(CHAT[:3], tokenizer, name, add_generation_prompt=True)
        assert train.input_ids[: len(prompt.input_ids)] == prompt.input_ids
        assert train.labels[len(prompt.input_ids)] != IGNORE_INDEX  # the reply starts right after


def test_plain_template_is_image_caption_eos(tokenizer):
    chat = [{"role": "user", "content": "<|image|>"}, {"role": "assistant", "content": "a red circle"}]
    enc = encode_conversation(chat, tokenizer, "plain")
    caption = ids(tokenizer, "a red circle")
    assert enc.input_ids == [1, IMAGE_TOKEN_INDEX] + caption + [2]
    assert enc.labels == [IGNORE_INDEX, IGNORE_INDEX] + caption + [2]


def test_truncation_cuts_at_a_turn_boundary(tokenizer):
    enc = encode_conversation(CHAT, tokenizer, "mplug_owl2")
    image_tokens = 9
    full = enc.expanded_length(image_tokens)
    assert truncate(enc, full, image_tokens) is enc
    cut = truncate(enc, full - 1, image_tokens)
    assert cut.input_ids == enc.input_ids[: enc.turn_ends[0]]
    assert cut.labels == enc.labels[: enc.turn_ends[0]]
    assert cut.num_images == 1 and cut.input_ids[-1] == tokenizer.eos_token_id
    with pytest.raises(TruncationError, match=r"first exchange is 22 tokens after image expansion \(9 per image\)"):
        truncate(enc, 20, image_tokens)


def test_batched_encoding_equals_one_call_per_piece(tokenizer):
    texts = ["", "  ", "<|image|>", "<|image|>\nwhat color is the circle ?", "red", "a <|image|> b <|image|>",
             "<|image|><|image|>\n", "USER: where is the red circle ? ASSISTANT:"]

    def one_by_one(text):
        out = []
        for k, chunk in enumerate(text.split("<|image|>")):
            out += [IMAGE_TOKEN_INDEX] if k else []
            out += ids(tokenizer, chunk.strip()) if chunk.strip() else []
        return out

    assert encode_texts(texts, tokenizer) == [one_by_one(t) for t in texts]
    assert encode_texts([], tokenizer) == []
