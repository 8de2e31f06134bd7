"""Small data sets on disk, shared by the data tests."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl2.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic data set (seed 0) with its tokenizer."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seed=0, num_stage1=20, num_stage2=40, num_heldout=25)


@pytest.fixture(scope="session")
def tokenizer(synthetic):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(synthetic["tokenizer"])


def write_jsonl(path: Path, records: list) -> Path:
    """Write records one per line; a str record is written verbatim (for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def save_image(path: Path, width: int = 40, height: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` but holds no pixel data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def chat(question: str, answer: str = "red") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
