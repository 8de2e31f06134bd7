"""A saved random toy model folder and a tiny synthetic data set, shared by the CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owl2.data import build_synthetic_tokenizer, write_synthetic_dataset
from owl2.processing import Owl2ImageProcessor, Owl2Processor
from tests.conftest import toy_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A random toy `Owl2Model` with the synthetic tokenizer and a 56-pixel image processor."""
    directory = tmp_path_factory.mktemp("toy-model")
    model = toy_model(seed=0)
    model.save_pretrained(directory)
    size = model.config.vision_config.image_size
    Owl2Processor(build_synthetic_tokenizer(), Owl2ImageProcessor(size=size)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """The synthetic data set with 5 held-out questions, plus `questions.jsonl` mixing image and text-only ones."""
    directory = tmp_path_factory.mktemp("tiny-data")
    paths = write_synthetic_dataset(directory, seed=0, num_stage1=1, num_stage2=1, num_heldout=5)
    records = [json.loads(line) for line in paths["heldout"].read_text().splitlines()]
    questions = [
        {"id": r["id"], "image": f"images/{r['image']}", "question": r["conversations"][0]["value"].split("\n", 1)[1],
         "question_type": r["question_type"]}
        for r in records
    ]  # fmt: skip
    questions.insert(2, {"id": "text-0", "text": "what is two plus three ?"})
    paths["questions"] = directory / "questions.jsonl"
    paths["questions"].write_text("".join(json.dumps(q) + "\n" for q in questions))
    return paths
