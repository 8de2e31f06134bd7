"""Answering questions with a saved model (official mPLUG-Owl2 `evaluate/evaluate_vqa.py`, the generation
half, and `model/builder.py` `load_pretrained_model`; OneLLM's `eval/*.py`).

A model folder is what a model's and its processor's `save_pretrained` write into one directory:
`config.json`, the weights, the tokenizer files, and `preprocessor_config.json` (mPLUG-Owl2) or
`media_config.json` (OneLLM). `config.json`'s `model_type` says which family it is.
Questions are asked one turn each, with the chat template training used, and answered greedily;
batches are left-padded, so a batch gives the answers each question gets alone.

Unlike the official loop (batch size 1, a fixed "Answer the question using a single word or
phrase." suffix), the batch size is free and the suffix is an option, since a model trained on
other prompts (the synthetic data set) has never seen it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from owl2.compile import compile_for_generation
from owl2.eval.inputs import Question, check_model_folder
from owl2.families import family, model_type
from owl2.models.multimodal import MultimodalPreTrainedModel
from owl2.processing.processor import MultimodalProcessor, batch_to

def load_pretrained(
    directory: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, template: str | None = None
) -> tuple[MultimodalPreTrainedModel, MultimodalProcessor]:
    """Load a model of either family and its processor from one folder, in eval mode.

    Args:
        directory: The model folder.
        device: Where the model goes.
        dtype: The model's dtype.
        template: Chat template; default: the one the family's release was trained with.

    Raises:
        FileNotFoundError: If the folder, its `config.json` or its processor's file is missing.
        ValueError: If the folder's files cannot be read as a model and a tokenizer.
    """
    directory = check_model_folder(directory)
    model_class, processor_class = family(model_type(directory))
    try:
        processor = processor_class.from_pretrained(directory, template=template)
        model = model_class.from_pretrained(str(directory), dtype=dtype)
    except (OSError, KeyError, TypeError) as e:  # transformers reports unreadable folders this way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{directory}: cannot load the model or its tokenizer ({first})") from None
    return model.to(device).eval(), processor


def messages_for(question: Question, prompt_suffix: str = "") -> list[dict[str, str]]:
    """The one-turn conversation asking `question`."""
    text = question.text + (f" {prompt_suffix}" if prompt_suffix else "")
    return [{"role": "user", "content": text}]


def load_inputs(questions: list[Question], processor: MultimodalProcessor) -> dict[str, list]:
    """Decode the questions' inputs, by modality, in order of appearance.

    Raises:
        ValueError: Naming `FILE:LINE` and the file of an unreadable input, or a modality the model lacks.
    """
    inputs: dict[str, list] = {}
    for question in questions:
        for modality, paths in question.inputs.items():
            for path in paths:
                try:
                    inputs.setdefault(modality, []).append(processor.load(modality, path))
                except ValueError as e:
                    raise ValueError(f"{question.location}: {e}") from None
    return inputs


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
    model: MultimodalPreTrainedModel,
    processor: MultimodalProcessor,
    questions: list[Question],
    max_new_tokens: int = 16,
    prompt_suffix: str = "",
    compile: bool = False,
) -> list[str]:
    """Answer a batch of questions greedily (left padding).

    Args:
        model: The model, in eval mode.
        processor: Its processor.
        questions: The batch.
        max_new_tokens: Most tokens per answer.
        prompt_suffix: Text appended to every question (e.g. the official "Answer the question using a
            single word or phrase.").
        compile: Compile the model's blocks (in place, once) for the prompt's forward and decode over a static
            cache with a compiled step (`owl2.compile.compile_for_generation`): the first batches of each new
            shape pay the compile time, later ones run compiled.

    Returns:
        One answer per question, decoded without special tokens and cut where the template's replies stop.
    """
    if not questions:
        return []
    batch = processor.apply_chat(
        [messages_for(q, prompt_suffix) for q in questions], inputs=load_inputs(questions, processor), padding_side="left"
    )
    compiled = compile_for_generation(model) if compile else {}
    output = model.generate(**model_inputs(batch, model), max_new_tokens=max_new_tokens, do_sample=False,
                            **processor.generation_kwargs(), **compiled)  # fmt: skip
    prompt_length = batch["input_ids"].shape[1]
    return [processor.decode(ids) for ids in new_tokens(output, prompt_length, processor.tokenizer.eos_token_id)]


def model_inputs(batch: dict, model: torch.nn.Module) -> dict:
    """A processor's batch on the model's device and in its dtype (floats only), without labels or Nones."""
    parameter = next(model.parameters())
    kept = {key: value for key, value in batch.items() if key != "labels" and value is not None}
    return batch_to(kept, parameter.device, parameter.dtype)
