"""What answering reads, checked without importing torch: the questions JSONL and the model folder.

Kept apart from `owl2.eval.generation` so that the command line reports a bad file or folder at once,
before it pays seconds for torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from owl2.data.checks import resolve_image_path
from owl2.eval.answers import iter_jsonl, record_id
from owl2.processing.templates import IMAGE_PLACEHOLDER

MODEL_FOLDER_FILES = ("config.json", "preprocessor_config.json")
"""Files every model folder holds (besides the weights and the tokenizer)."""

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


def check_model_folder(directory: str | Path) -> Path:
    """The folder, if it looks like one `Owl2Model.save_pretrained` and `Owl2Processor.save_pretrained` wrote.

    Raises:
        FileNotFoundError: If the folder, its `config.json` or its `preprocessor_config.json` is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model folder")
    for name in MODEL_FOLDER_FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory}: no {name}; expected a folder written by Owl2Model.save_pretrained and "
                "Owl2Processor.save_pretrained"
            )
    return directory
