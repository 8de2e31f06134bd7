"""Reading question, answer and reference records from JSONL (official `evaluate_vqa.py` writes
one JSON list of `{question_id, answer}`; here every file is JSONL, one record a line).

A prediction record has `id` and `answer`. A reference record has `id` and either `answer` (a
string) or `answers` (a list of strings, or of `{"answer": str}` objects as in VQA v2
annotations); its type, if any, is in `question_type` or `type`. Every problem is a
`ValueError` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

TYPE_KEYS = ("question_type", "type")
"""Record keys holding a question type, in order of preference."""


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


def read_predictions(path: str | Path) -> dict[str, str]:
    """Answers by id from a predictions JSONL (`id`, `answer`).

    Raises:
        ValueError: For a record without a string `answer`, or an id given twice.
    """
    path = Path(path)
    predictions: dict[str, str] = {}
    for number, record in iter_jsonl(path):
        qid = record_id(record, path, number)
        if not isinstance(record.get("answer"), str):
            raise ValueError(f"{path}:{number}: missing 'answer' (a string)")
        if qid in predictions:
            raise ValueError(f"{path}:{number}: id {qid!r} appears twice")
        predictions[qid] = record["answer"]
    return predictions


def read_references(path: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Reference answers and question types by id from a references JSONL.

    Returns:
        `(answers by id, type by id)`; ids without a type are absent from the second.

    Raises:
        ValueError: For a record without `answer`/`answers`, or an id given twice.
    """
    path = Path(path)
    references: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for number, record in iter_jsonl(path):
        qid = record_id(record, path, number)
        if qid in references:
            raise ValueError(f"{path}:{number}: id {qid!r} appears twice")
        references[qid] = reference_answers(record, path, number)
        qtype = record_type(record)
        if qtype is not None:
            types[qid] = qtype
    if not references:
        raise ValueError(f"{path}: no reference records")
    return references, types


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
