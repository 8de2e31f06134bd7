"""Lazy reading of LLaVA-style data files (official `train.py` `LazySupervisedDataset`, which
`json.load`s the whole file).

A `.jsonl` file is indexed by byte offsets of its non-blank lines and each record is parsed when
asked for, so a malformed line is reported as that line's problem instead of failing the whole
file. A `.json` file (one array of records) has to be parsed at once; its records are located by
their index in the array.
"""

from __future__ import annotations

import json
from pathlib import Path


class RecordError(ValueError):
    """A bad record: `location` is `line N` (JSONL) or `record N` (JSON array)."""

    def __init__(self, location: str, reason: str):
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


class DataFileError(ValueError):
    """A data file that cannot be read at all (missing, wrong extension, not a JSON array)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RecordFile:
    """Records of one `.json` or `.jsonl` file, parsed on access.

    Example:
        >>> records = RecordFile("data/stage2.jsonl")
        >>> records.location(0), records[0]["id"]
        ('line 1', 'stage2-0')
    """

    def __init__(self, path: str | Path):
        """Index the file.

        Raises:
            DataFileError: If the file is missing, not `.json`/`.jsonl`, or a `.json` file is not a valid array.
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFileError(self.path, "no such data file")
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        if not self.jsonl and self.path.suffix.lower() != ".json":
            raise DataFileError(self.path, "expected a .json or .jsonl file")
        self._offsets: list[tuple[int, int]] = []  # (line number, byte offset)
        self._array: list | None = None
        if self.jsonl:
            offset = 0
            with open(self.path, "rb") as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        self._offsets.append((number, offset))
                    offset += len(line)
        else:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataFileError(self.path, f"line {e.lineno}: malformed JSON: {e.msg}") from None
            except UnicodeDecodeError as e:
                raise DataFileError(self.path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not isinstance(data, list):
                raise DataFileError(self.path, f"expected a JSON array of records, got {type(data).__name__}")
            self._array = data

    def __len__(self) -> int:
        return len(self._offsets) if self.jsonl else len(self._array)

    def location(self, index: int) -> str:
        """Where record `index` is, for messages: `line N` (1-based) or `record N` (0-based)."""
        return f"line {self._offsets[index][0]}" if self.jsonl else f"record {index}"

    def __getitem__(self, index: int) -> dict:
        """Parse record `index`.

        Raises:
            RecordError: If the line is not valid JSON or not an object.
        """
        if self.jsonl:
            with open(self.path, "rb") as f:
                f.seek(self._offsets[index][1])
                line = f.readline()
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                raise RecordError(self.location(index), f"malformed JSON: {reason}") from None
        else:
            record = self._array[index]
        if not isinstance(record, dict):
            raise RecordError(self.location(index), f"expected a JSON object, got {type(record).__name__}")
        return record
