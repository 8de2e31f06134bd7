"""Token ids and training labels for a conversation (official `train.py` `preprocess_v1`,
`mm_utils.py` `tokenizer_image_token`).

The official code renders the whole prompt, tokenizes it once, then re-tokenizes pieces to guess
where each reply starts (with a `- 2` that depends on how LLaMA's tokenizer treats a trailing
space, and a fallback that silently masks the whole sample on mismatch). Here each turn is
tokenized on its own and the ids are concatenated, so the label mask is exact by construction;
inference prompts are built by the same function, so training and inference see the same ids.

Supervised positions, as in the official code: every assistant reply and its end-of-sequence
token. Everything else (BOS, system prompt, user turns, role names, image placeholders) gets
`IGNORE_INDEX`. Each `<|image|>` becomes one `IMAGE_TOKEN_INDEX`; the model expands it to the
image's tokens.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from owl2.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from owl2.processing.templates import (
    ASSISTANT,
    PLACEHOLDER_PATTERN,
    PLACEHOLDERS,
    ChatTemplate,
    get_template,
    validate_roles,
)

IMAGE_ONLY = MappingProxyType({"image": IMAGE_TOKEN_INDEX})
"""The placeholders of mPLUG-Owl2 (modality -> id): `<|image|>` only."""


@dataclass
class EncodedConversation:
    """Token ids and labels of one conversation."""

    input_ids: list[int]
    """Token ids with `IMAGE_TOKEN_INDEX` once per image."""
    labels: list[int]
    """Same length as `input_ids`; `IGNORE_INDEX` where not supervised."""
    turn_ends: list[int] = field(default_factory=list)
    """Lengths after each complete user+assistant exchange: the cut points truncation may use."""

    @property
    def num_images(self) -> int:
        """Image placeholders in `input_ids`."""
        return sum(1 for i in self.input_ids if i == IMAGE_TOKEN_INDEX)

    def num_inputs(self, placeholder_ids: Collection[int] = (IMAGE_TOKEN_INDEX,)) -> int:
        """Placeholders of any of `placeholder_ids` in `input_ids`."""
        return sum(1 for i in self.input_ids if i in placeholder_ids)

    def expanded_length(self, num_image_tokens: int, placeholder_ids: Collection[int] = (IMAGE_TOKEN_INDEX,)) -> int:
        """Length the LLM sees once each placeholder (of `placeholder_ids`) becomes `num_image_tokens` tokens."""
        return len(self.input_ids) + self.num_inputs(placeholder_ids) * (num_image_tokens - 1)


def encode_text(text: str, tokenizer, placeholders: Mapping[str, int] = IMAGE_ONLY) -> list[int]:
    """Token ids of `text` with a placeholder id where it says `<|image|>`, `<|audio|>` ... (no BOS/EOS).

    Args:
        text: Text that may contain placeholders (`owl2.processing.templates.PLACEHOLDERS`).
        tokenizer: Any transformers tokenizer.
        placeholders: The model's modalities and their ids (`OneLLMConfig.modality_token_index`).

    Raises:
        ValueError: The text holds the placeholder of a modality that is not in `placeholders`.
    """
    return encode_texts([text], tokenizer, placeholders)[0]


def encode_texts(texts: list[str], tokenizer, placeholders: Mapping[str, int] = IMAGE_ONLY) -> list[list[int]]:
    """`encode_text` of each of `texts`, with one tokenizer call for all of them.

    Each call of a transformers tokenizer costs about 0.1 ms however short the text, and a
    conversation is several short pieces: one call for all of them took a demo conversation's
    tokenization from 0.39 to 0.14 ms.
    """
    ids_of = {PLACEHOLDERS[modality]: index for modality, index in placeholders.items()}
    pieces, marks = [], []
    for text in texts:
        found = PLACEHOLDER_PATTERN.findall(text)
        unknown = sorted(set(found) - set(ids_of))
        if unknown:
            raise ValueError(f"the text holds {', '.join(unknown)}, but this model takes only {', '.join(ids_of)}")
        marks.append([ids_of[mark] for mark in found])
        pieces.append([chunk.strip() for chunk in PLACEHOLDER_PATTERN.split(text)])
    chunks = [chunk for chunk_list in pieces for chunk in chunk_list if chunk]
    encoded = iter(tokenizer(chunks, add_special_tokens=False)["input_ids"] if chunks else [])
    result = []
    for chunk_list, mark_ids in zip(pieces, marks):
        ids: list[int] = []
        for k, chunk in enumerate(chunk_list):
            if k > 0:
                ids.append(mark_ids[k - 1])
            if chunk:
                ids.extend(next(encoded))
        result.append(ids)
    return result


def encode_conversation(
    messages: list[dict[str, str]],
    tokenizer,
    template: str | ChatTemplate = "mplug_owl2",
    add_generation_prompt: bool = False,
    placeholders: Mapping[str, int] = IMAGE_ONLY,
) -> EncodedConversation:
    """Tokenize a conversation turn by turn and build its label mask.

    Args:
        messages: Alternating `{"role": "user"|"assistant", "content": str}`, starting with a user.
        tokenizer: A transformers tokenizer with `eos_token_id` (and `bos_token_id`, if it uses one).
        template: A `ChatTemplate` or its name in `TEMPLATES`.
        add_generation_prompt: For inference: the conversation ends with a user turn, and the ids end
            with the assistant prefix.
        placeholders: The model's modalities and their placeholder ids (default: mPLUG-Owl2's image).

    Returns:
        The ids, the labels and the turn boundaries.

    Raises:
        ValueError: If the roles do not alternate, or the tokenizer has no EOS token.
    """
    template = get_template(template)
    validate_roles(messages)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id; replies must end with one")
    ids: list[int] = []
    labels: list[int] = []
    turn_ends: list[int] = []

    def add(new_ids: list[int], supervised: bool) -> None:
        ids.extend(new_ids)
        labels.extend(new_ids if supervised else [IGNORE_INDEX] * len(new_ids))

    leading, messages = template.move_inputs_first(messages)
    texts = [leading, template.prefix_text()] + [
        template.reply_text(m["content"]) if m["role"] == ASSISTANT else template.user_text(m["content"], turn)
        for turn, m in enumerate(messages)
    ]
    inputs, prefix, *turns = encode_texts(texts, tokenizer, placeholders)
    if tokenizer.bos_token_id is not None:
        add([tokenizer.bos_token_id], supervised=False)
    add(inputs + prefix, supervised=False)
    reply_end = [tokenizer.eos_token_id] if template.eos_after_reply else []
    for message, turn in zip(messages, turns):
        if message["role"] == ASSISTANT:
            add(turn + reply_end, supervised=True)
            turn_ends.append(len(ids))
        else:
            add(turn, supervised=False)
    if add_generation_prompt and messages and messages[-1]["role"] == ASSISTANT:
        raise ValueError("add_generation_prompt needs a conversation that ends with a user turn")
    if not template.eos_after_reply and not add_generation_prompt:
        add([tokenizer.eos_token_id], supervised=False)  # the sample's one EOS, unsupervised (OneLLM)
    # placeholder positions are never supervised, even if a reply contained one
    labels = [IGNORE_INDEX if i < 0 else lab for i, lab in zip(ids, labels)]
    return EncodedConversation(input_ids=ids, labels=labels, turn_ends=turn_ends)


class TruncationError(ValueError):
    """A sample that cannot be shortened to the length limit at a turn boundary."""


def truncate(
    encoded: EncodedConversation,
    max_length: int,
    num_image_tokens: int,
    placeholder_ids: Collection[int] = (IMAGE_TOKEN_INDEX,),
) -> EncodedConversation:
    """Shorten a conversation to `max_length` LLM tokens, counting each input as `num_image_tokens`.

    The cut is made only after a complete exchange (user turn + reply + EOS), so no placeholder is
    cut and every kept placeholder keeps its input (each modality's inputs are its first ones).

    Args:
        encoded: The output of `encode_conversation`.
        max_length: Limit in LLM tokens after input expansion.
        num_image_tokens: Tokens one input becomes (`Owl2Config.num_image_tokens`,
            `OneLLMConfig.num_tokens_per_input`).
        placeholder_ids: The family's placeholder ids (mPLUG-Owl2's image by default).

    Returns:
        `encoded` itself if it fits, else a shortened copy.

    Raises:
        TruncationError: If not even the first exchange fits, with both lengths in the message.
    """
    if encoded.expanded_length(num_image_tokens, placeholder_ids) <= max_length:
        return encoded
    for end in reversed(encoded.turn_ends):
        cut = EncodedConversation(
            input_ids=encoded.input_ids[:end],
            labels=encoded.labels[:end],
            turn_ends=[e for e in encoded.turn_ends if e <= end],
        )
        if cut.expanded_length(num_image_tokens, placeholder_ids) <= max_length:
            return cut
    first = encoded.turn_ends[0] if encoded.turn_ends else len(encoded.input_ids)
    head = EncodedConversation(encoded.input_ids[:first], encoded.labels[:first])
    first_len = head.expanded_length(num_image_tokens, placeholder_ids)
    what = "image" if tuple(placeholder_ids) == (IMAGE_TOKEN_INDEX,) else "input"
    raise TruncationError(
        f"the first exchange is {first_len} tokens after {what} expansion "
        f"({num_image_tokens} per {what}), over max_length {max_length}"
    )
