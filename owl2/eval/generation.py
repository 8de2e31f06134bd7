"""Answering questions with a saved model (official `evaluate/evaluate_vqa.py`, the generation half,
and `model/builder.py` `load_pretrained_model`).

A model folder is what `Owl2Model.save_pretrained` and `Owl2Processor.save_pretrained` write into
one directory: `config.json`, the weights, the tokenizer files and `preprocessor_config.json`.
Questions are asked one turn each, with the chat template training used, and answered greedily;
batches are left-padded, so a batch gives the answers each question gets alone.

Unlike the official loop (batch size 1, a fixed "Answer the question using a single word or
phrase." suffix), the batch size is free and the suffix is an option, since a model trained on
other prompts (the synthetic data set) has never seen it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from owl2.data.checks import load_image, resolve_image_path
from owl2.eval.answers import iter_jsonl, record_id
from owl2.models import Owl2Model
from owl2.processing import IMAGE_PLACEHOLDER, Owl2Processor

CARRIED_KEYS = ("question_type", "type", "answer_type", "image")
"""Input keys copied into each output record (besides `id`, `question` and `answer`)."""


@dataclass
class Question:
    """One question to answer."""

    id: str
    """The record's id."""
    text: str
    """The question; holds one `<|image|>` if and only if `image` is set."""
    image: Path | None
    """The image file, resolved inside the image folder."""
    location: str
    """`FILE:LINE` of the record, for messages."""
    extra: dict = field(default_factory=dict)
    """Input fields carried into the output (`CARRIED_KEYS`)."""


def question_text(record: dict) -> str | None:
    """The question of a record: `question`, `text`, or the first human turn of `conversations`."""
    for key in ("question", "text"):
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    turns = record.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and isinstance(turns[0].get("value"), str):
        return turns[0]["value"]
    return None


def read_questions(path: str | Path, image_folder: str | Path | None = None) -> list[Question]:
    """Read and check a questions JSONL (`id`, `question` or `text`, optional `image`).

    Args:
        path: The JSONL file.
        image_folder: Folder image paths are relative to (default: the file's folder).

    Returns:
        The questions, in file order; a question with an image starts with `<|image|>` unless it
        already holds one.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: Naming `FILE:LINE` for a malformed record, a missing question, a repeated id, an
            image path outside the folder or a missing image file.
    """
    path = Path(path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    questions: list[Question] = []
    seen: set[str] = set()
    for number, record in iter_jsonl(path):
        location = f"{path}:{number}"
        qid = record_id(record, path, number)
        if qid in seen:
            raise ValueError(f"{location}: id {qid!r} appears twice")
        seen.add(qid)
        text = question_text(record)
        if text is None:
            raise ValueError(f"{location}: missing 'question' (or 'text'): expected the question as a string")
        image = record.get("image")
        if image is not None and not (isinstance(image, str) and image):
            raise ValueError(f"{location}: 'image' must be one relative path (a string)")
        image_path = None
        if image is not None:
            try:
                image_path = resolve_image_path(folder, image)
            except ValueError as e:
                raise ValueError(f"{location}: {e}") from None
            if not image_path.is_file():
                raise ValueError(f"{location}: image {image!r} not found in {folder}")
            if IMAGE_PLACEHOLDER not in text:
                text = f"{IMAGE_PLACEHOLDER}\n{text}"
        if text.count(IMAGE_PLACEHOLDER) != (1 if image_path else 0):
            raise ValueError(
                f"{location}: the question holds {text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} but the record has "
                f"{1 if image_path else 0} image"
            )
        extra = {k: record[k] for k in CARRIED_KEYS if k in record}
        questions.append(Question(qid, text, image_path, location, extra))
    return questions


def load_pretrained(
    directory: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, template: str = "mplug_owl2"
) -> tuple[Owl2Model, Owl2Processor]:
    """Load a model and its processor from one folder, in eval mode.

    Raises:
        FileNotFoundError: If the folder, its `config.json` or its `preprocessor_config.json` is missing.
        ValueError: If the folder's files cannot be read as an `Owl2Model` and a tokenizer.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model folder")
    for name in ("config.json", "preprocessor_config.json"):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory}: no {name}; expected a folder written by Owl2Model.save_pretrained and "
                "Owl2Processor.save_pretrained"
            )
    try:
        processor = Owl2Processor.from_pretrained(directory, template=template)
        model = Owl2Model.from_pretrained(str(directory), dtype=dtype)
    except (OSError, KeyError, TypeError) as e:  # transformers reports unreadable folders this way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{directory}: cannot load the model or its tokenizer ({first})") from None
    return model.to(device).eval(), processor


def messages_for(question: Question, prompt_suffix: str = "") -> list[dict[str, str]]:
    """The one-turn conversation asking `question`."""
    text = question.text + (f" {prompt_suffix}" if prompt_suffix else "")
    return [{"role": "user", "content": text}]


def load_images(questions: list[Question]) -> list:
    """Decode the questions' images, in order.

    Raises:
        ValueError: Naming `FILE:LINE` of an unreadable image.
    """
    images = []
    for question in questions:
        if question.image is None:
            continue
        try:
            images.append(load_image(question.image))
        except ValueError as e:
            raise ValueError(f"{question.location}: {e}") from None
    return images


def new_tokens(output: torch.Tensor, prompt_length: int, eos_token_id: int | None) -> list[list[int]]:
    """Per row, the generated ids after the prompt, cut before the first EOS."""
    rows = []
    for row in output[:, prompt_length:].tolist():
        if eos_token_id is not None and eos_token_id in row:
            row = row[: row.index(eos_token_id)]
        rows.append(row)
    return rows


@torch.inference_mode()
def answer_batch(
    model: Owl2Model,
    processor: Owl2Processor,
    questions: list[Question],
    max_new_tokens: int = 16,
    prompt_suffix: str = "",
) -> list[str]:
    """Answer a batch of questions greedily (left padding).

    Args:
        model: The model, in eval mode.
        processor: Its processor (tokenizer and image processor).
        questions: The batch.
        max_new_tokens: Most tokens per answer.
        prompt_suffix: Text appended to every question (e.g. the official "Answer the question using a
            single word or phrase.").

    Returns:
        One answer per question, decoded without special tokens.
    """
    if not questions:
        return []
    batch = processor.apply_chat(
        [messages_for(q, prompt_suffix) for q in questions], images=load_images(questions), padding_side="left"
    )
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" and v is not None}
    tokenizer = processor.tokenizer
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=processor.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return [processor.decode(ids) for ids in new_tokens(output, inputs["input_ids"].shape[1], tokenizer.eos_token_id)]
