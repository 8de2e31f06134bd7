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


# -- OneLLM's template and every modality's placeholder -------------------------------------------------------

ONELLM_CHAT = [
    {"role": "user", "content": "<|audio|>\nwhat is this sound ?"},
    {"role": "assistant", "content": "a dog barking"},
    {"role": "user", "content": "is it loud ?"},
    {"role": "assistant", "content": "yes"},
]


def official_onellm_conversation(messages):
    """The text OneLLM's `ConversationGenerator.add_speaker_and_signal` builds (`data/finetune_dataset.py`),
    restated: the header, then '### ' + role + ': ' + value + '\\n' per turn, then '### '; placeholders stripped
    (the release puts the modality block after BOS instead); and the supervised pieces, value + '\\n###'."""
    header = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.\n\n"
    )
    text, predicted = header, []
    for m in messages:
        role = "Human" if m["role"] == "user" else "Assistant"
        value = m["content"].replace("<|audio|>", "").strip()
        text += f"### {role}: {value}\n"
        if role == "Assistant":
            predicted.append(value + "\n###")
    return text + "### ", predicted


@pytest.fixture(scope="module")
def word_tokenizer():
    """Whitespace words: enough to read OneLLM's template back word by word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "### Human: Assistant: what is this sound ? a dog barking it loud yes".split(" ")
    header = official_onellm_conversation([])[0].split("\n")[0].split(" ")
    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<s>", "</s>", *words, *header]))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_onellm_render_is_the_releases_training_text_with_the_block_after_bos():
    text, _ = official_onellm_conversation(ONELLM_CHAT)
    ours = TEMPLATES["onellm"].render(ONELLM_CHAT)
    # the block first (the release splices it after BOS); the release's trailing "### " before EOS is cut to "###"
    assert ours == "<|audio|>" + text.removesuffix(" ")
    prompt = TEMPLATES["onellm"].render(ONELLM_CHAT[:1], add_generation_prompt=True)
    assert prompt == "<|audio|>" + official_onellm_conversation(ONELLM_CHAT[:1])[0].removesuffix("### ") + "### Assistant:"


def test_onellm_labels_supervise_each_reply_with_its_separator_and_the_block_follows_bos(word_tokenizer):
    from owl2.constants import ONELLM_MODALITY_TOKEN_INDEX

    encoded = encode_conversation(ONELLM_CHAT, word_tokenizer, "onellm", placeholders=ONELLM_MODALITY_TOKEN_INDEX)
    assert encoded.input_ids[:2] == [word_tokenizer.bos_token_id, ONELLM_MODALITY_TOKEN_INDEX["audio"]]
    assert encoded.input_ids[-1] == word_tokenizer.eos_token_id and encoded.labels[-1] == IGNORE_INDEX
    supervised, run = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            supervised.append(run)
            run = []
    _, predicted = official_onellm_conversation(ONELLM_CHAT)
    assert supervised == [ids(word_tokenizer, piece) for piece in predicted]
    text = word_tokenizer.decode([t for t in encoded.input_ids[2:-1]])
    assert "<unk>" not in text


def test_every_modality_has_its_placeholder_and_a_model_refuses_those_it_lacks(tokenizer):
    from owl2.constants import ONELLM_MODALITY_TOKEN_INDEX

    (ids_,) = encode_texts(["<|video|> what <|imu|>"], tokenizer, ONELLM_MODALITY_TOKEN_INDEX)
    assert ids_[0] == ONELLM_MODALITY_TOKEN_INDEX["video"] and ids_[-1] == ONELLM_MODALITY_TOKEN_INDEX["imu"]
    with pytest.raises(ValueError, match=r"holds <\|audio\|>, but this model takes only <\|image\|>"):
        encode_texts(["<|audio|> what"], tokenizer)
