"""Reading question, answer and reference records from JSONL (official `evaluate_vqa.py` writes
one JSON list of `{question_id, answer}`; here every file is JSONL, one record a line).

A prediction record has `id` and `answer`. A reference record has `id` and either `answer` (a
string) or `answers` (a list of strings, or of `{"answer": str}` objects as in VQA v2
annotations); its type, if any, is in `question_type` or `type`. Either may name its modality, in
`modality` or by its input keys (`image`, `video`, `audio`, `point`, `imu`, `fmri`, `rgbd`, `rgbn`,
as `owl2 generate` copies them into its output). Every problem is a `ValueError` naming the file
and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from owl2.constants import ONELLM_MODALITIES

TYPE_KEYS = ("question_type", "type")
"""Record keys holding a question type, in order of preference."""

MODALITY_KEY = "modality"
"""Record key naming the modality outright."""

TEXT_MODALITY = "text"
"""The modality of a question without inputs, when other questions name theirs."""


@dataclass(frozen=True)
class Prediction:
    """One record of a predictions file."""

    answer: str
    """The predicted answer."""
    modality: str | None
    """`record_modality` of the record."""
    location: str
    """`FILE:LINE`, for messages."""


@dataclass(frozen=True)
class Reference:
    """One record of a references file."""

    answers: list[str]
    """The reference answers, one per annotator."""
    type: str | None
    """The question type, if the record has one."""
    modality: str | None
    """`record_modality` of the record."""
    location: str
    """`FILE:LINE`, for messages."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line number, record)` for every non-blank line of a JSONL file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For a line that is not a JSON object, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: malformed JSON ({e.msg}); expected one JSON object per line") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; expected a JSONL file") from None


def record_id(record: dict, path: Path, number: int) -> str:
    """The record's `id` (or `question_id`) as a string.

    Raises:
        ValueError: If it has neither.
    """
    for key in ("id", "question_id"):
        if key in record and isinstance(record[key], (str, int)):
            return str(record[key])
    raise ValueError(f"{path}:{number}: missing 'id' (a string or integer)")


def record_type(record: dict) -> str | None:
    """The record's question type, if it has one."""
    for key in TYPE_KEYS:
        if isinstance(record.get(key), str):
            return record[key]
    return None


def record_modality(record: dict) -> str | None:
    """The record's modality: its `modality`, else the input keys it has joined by '+' ("video+audio")."""
    if isinstance(record.get(MODALITY_KEY), str):
        return record[MODALITY_KEY]
    present = [modality for modality in ONELLM_MODALITIES if record.get(modality)]
    return "+".join(present) if present else None


def read_prediction_records(path: str | Path) -> dict[str, Prediction]:
    """Prediction records by id from a predictions JSONL (`id`, `answer`, optional modality).

    Raises:
        ValueError: For a record without a string `answer`, or an id given twice.
    """
    path = Path(path)
    predictions: dict[str, Prediction] = {}
    for number, record in iter_jsonl(path):
        qid = record_id(record, path, number)
        if not isinstance(record.get("answer"), str):
            raise ValueError(f"{path}:{number}: missing 'answer' (a string)")
        if qid in predictions:
            raise ValueError(f"{path}:{number}: id {qid!r} appears twice")
        predictions[qid] = Prediction(record["answer"], record_modality(record), f"{path}:{number}")
    return predictions


def read_reference_records(path: str | Path) -> dict[str, Reference]:
    """Reference records by id from a references JSONL.

    Raises:
        ValueError: For a record without `answer`/`answers`, an id given twice, or no record at all.
    """
    path = Path(path)
    references: dict[str, Reference] = {}
    for number, record in iter_jsonl(path):
        qid = record_id(record, path, number)
        if qid in references:
            raise ValueError(f"{path}:{number}: id {qid!r} appears twice")
        answers = reference_answers(record, path, number)
        references[qid] = Reference(answers, record_type(record), record_modality(record), f"{path}:{number}")
    if not references:
        raise ValueError(f"{path}: no reference records")
    return references


def read_predictions(path: str | Path) -> dict[str, str]:
    """Answers by id from a predictions JSONL (`read_prediction_records`, answers only)."""
    return {qid: prediction.answer for qid, prediction in read_prediction_records(path).items()}


def read_references(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Reference answers and question types by id from a references JSONL (`read_reference_records`).

    Returns:
        `(answers by id, type by id)`; ids without a type are absent from the second.
    """
    records = read_reference_records(path)
    types = {qid: ref.type for qid, ref in records.items() if ref.type is not None}
    return {qid: ref.answers for qid, ref in records.items()}, types


def question_modalities(references: dict[str, Reference], predictions: dict[str, Prediction]) -> dict[str, str]:
    """The modality of every referenced question: the reference's, else its prediction's.

    Returns:
        Modality by id; empty when no record names one, and `TEXT_MODALITY` for the questions
        without one when others do.
    """
    named = {}
    for qid, ref in references.items():
        prediction = predictions.get(qid)
        named[qid] = ref.modality or (prediction.modality if prediction is not None else None)
    if all(modality is None for modality in named.values()):
        return {}
    return {qid: modality or TEXT_MODALITY for qid, modality in named.items()}


def reference_answers(record: dict, path: Path, number: int) -> list[str]:
    """The record's reference answers: `answers` (strings or `{"answer": ...}`) or `answer`."""
    if "answers" in record:
        answers = record["answers"]
        if isinstance(answers, list) and answers:
            texts = [a["answer"] if isinstance(a, dict) else a for a in answers]
            if all(isinstance(t, str) for t in texts):
                return texts
        raise ValueError(f"{path}:{number}: 'answers' must be a non-empty list of strings or {{'answer': str}} objects")
    if isinstance(record.get("answer"), str):
        return [record["answer"]]
    raise ValueError(f"{path}:{number}: missing 'answer' (a string) or 'answers' (a list)")
