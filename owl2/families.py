"""The two model families by `model_type`: which model and processor classes a folder or a preset needs.

A model folder's `config.json` (or a preset JSON such as `configs/model/onellm-toy.json`) says `model_type`:
"owl2" (mPLUG-Owl2, `Owl2Model` and `Owl2Processor`) or "onellm" (`OneLLMModel` and `OneLLMProcessor`). Evaluation,
the command line and the trainer all ask this module, so a third family is added here once.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_TYPES = ("owl2", "onellm")
"""The `model_type`s a model folder or preset may have: mPLUG-Owl2's and OneLLM's."""


def config_model_type(path: str | Path) -> str:
    """The `model_type` of a model config JSON (a folder's `config.json` or a preset).

    Raises:
        ValueError: If the file is unreadable or names another model type.
    """
    path = Path(path)
    try:
        kind = json.loads(path.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable model config ({e})") from None
    if kind not in MODEL_TYPES:
        raise ValueError(f"{path}: model_type {kind!r}; expected one of {list(MODEL_TYPES)}")
    return kind


def model_type(directory: str | Path) -> str:
    """The `model_type` of a model folder's `config.json` ("owl2" or "onellm").

    Raises:
        ValueError: If `config.json` is unreadable or names another model type.
    """
    return config_model_type(Path(directory) / "config.json")


def family(kind: str) -> tuple[type, type]:
    """The model and processor classes of a `model_type` (each family's model imported only when asked for)."""
    from owl2.processing.processor import OneLLMProcessor, Owl2Processor

    if kind == "onellm":
        from owl2.models.onellm import OneLLMModel  # timm and the point ops: only for OneLLM

        return OneLLMModel, OneLLMProcessor
    if kind == "owl2":
        from owl2.models.owl2 import Owl2Model

        return Owl2Model, Owl2Processor
    raise ValueError(f"model_type {kind!r}; expected one of {list(MODEL_TYPES)}")
