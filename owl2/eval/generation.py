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

from pathlib import Path

import torch

from owl2.data.checks import load_image
from owl2.eval.inputs import Question, check_model_folder
from owl2.models import Owl2Model
from owl2.processing import Owl2Processor


def load_pretrained(
    directory: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, template: str = "mplug_owl2"
) -> tuple[Owl2Model, Owl2Processor]:
    """Load a model and its processor from one folder, in eval mode.

    Raises:
        FileNotFoundError: If the folder, its `config.json` or its `preprocessor_config.json` is missing.
        ValueError: If the folder's files cannot be read as an `Owl2Model` and a tokenizer.
    """
    directory = check_model_folder(directory)
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
