"""What answering reads, checked without importing torch: the questions JSONL and the model folder.

Kept apart from `owl2.eval.generation` so that the command line reports a bad file or folder at once,
before it pays seconds for torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from owl2.data.checks import InputName, InputPath, check_placeholders, record_inputs, resolve_input
from owl2.eval.answers import iter_jsonl, record_id
from owl2.processing.templates import PLACEHOLDERS

PROCESSOR_FILES = ("preprocessor_config.json", "media_config.json")
"""What a model folder's processor is read from: mPLUG-Owl2's image processor, or OneLLM's media config."""

CARRIED_KEYS = ("question_type", "type", "answer_type", *PLACEHOLDERS)
"""Input keys copied into each output record (besides `id`, `question` and `answer`): the inputs among them."""


@dataclass
class Question:
    """One question to answer."""

    id: str
    """The record's id."""
    text: str
    """The question; holds one placeholder (`<|image|>`, `<|audio|>` ...) per input."""
    inputs: dict[str, list[InputPath]]
    """Modality -> its input files, resolved inside the folder, in order of their placeholders."""
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
    """Read and check a questions JSONL (`id`, `question` or `text`, and optional inputs).

    Inputs are keys named after their modality (`owl2.data.checks`): `image`, `video`, `audio`, `point`,
    `imu`, `fmri` (a path or a list), `rgbd`, `rgbn` (a pair `[image, map]` or a list of pairs).

    Args:
        path: The JSONL file.
        image_folder: Folder input paths are relative to (default: the file's folder).

    Returns:
        The questions, in file order; the placeholders of a modality the question does not write are put
        in front of it.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: Naming `FILE:LINE` for a malformed record, a missing question, a repeated id, a path
            outside the folder, a missing file, or placeholders that do not match the inputs.
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
        try:
            names = record_inputs(record)
            inputs = {m: [resolve_input(folder, m, name) for name in ns] for m, ns in names.items()}
        except ValueError as e:
            raise ValueError(f"{location}: {e}") from None
        for modality, paths in inputs.items():
            for name, resolved in zip(names[modality], paths):
                for one, file in zip(_files(name), _files(resolved)):
                    if not file.is_file():
                        raise ValueError(f"{location}: {modality} {one!r} not found in {folder}")
        leading = "".join(PLACEHOLDERS[m] * len(ps) for m, ps in inputs.items() if PLACEHOLDERS[m] not in text)
        text = f"{leading}\n{text}" if leading else text
        try:
            check_placeholders(text, inputs)
        except ValueError as e:
            raise ValueError(f"{location}: the question holds {e}") from None
        extra = {k: record[k] for k in CARRIED_KEYS if k in record}
        questions.append(Question(qid, text, inputs, location, extra))
    return questions


def _files(input_: InputName | InputPath) -> tuple:
    """The one file of an input, or both of a pair."""
    return input_ if isinstance(input_, tuple) else (input_,)


def check_model_folder(directory: str | Path) -> Path:
    """The folder, if it looks like one a model's and its processor's `save_pretrained` wrote.

    Raises:
        FileNotFoundError: If the folder, its `config.json` or its processor's file is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model folder")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json; expected a folder written by a model's save_pretrained")
    if not any((directory / name).is_file() for name in PROCESSOR_FILES):
        raise FileNotFoundError(
            f"{directory}: no {' or '.join(PROCESSOR_FILES)}; expected a folder written by a processor's "
            "save_pretrained (Owl2Processor or OneLLMProcessor)"
        )
    return directory
