"""What every synthetic modality shares: the item a generator returns and seeded numpy (shapes are drawn by
`owl2.data.synthetic.draw_shape`, as the image set draws them)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Item:
    """One synthetic input, written to disk."""

    value: str | list[str]
    """The record's value for the modality's key: a path relative to the data folder, or an `[image, map]` pair."""
    caption: str
    """Its stage-1 caption."""
    questions: dict[str, tuple[str, str]]
    """Question type -> (question without placeholder, one- or two-word answer)."""


def numpy_rng(rng: random.Random) -> np.random.Generator:
    """A numpy generator drawn from `rng` (so the signal's noise follows the item's seed)."""
    return np.random.default_rng(rng.getrandbits(64))
