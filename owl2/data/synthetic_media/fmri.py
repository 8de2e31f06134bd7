"""A stand-in for fMRI: a scene's code through a fixed random linear map into voxels, plus noise; `.npy`.

A scene of the image set (`synthetic.draw_scene`, not saved) is coded per quadrant as the colour and the kind
of the shape there, if any (`ATTRIBUTES`, 36 zeros and ones: the whole scene, bindings included); `projection`
maps the code to `fmri_num_voxels` betas, the same map for every data set of that size (one "subject"), and
each of three repeats adds its own noise, as NSD's three scans of an image do. With at least 36 voxels the
scene is recoverable by least squares. The captions and questions are the image set's."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from owl2.data.synthetic import COLORS, POSITIONS, QUESTION_TYPES, SHAPES, Shape, ask, caption, draw_scene
from owl2.data.synthetic_media.common import Item, numpy_rng
from owl2.processing.media.config import MediaConfig

ATTRIBUTES = tuple(f"{position} {name}" for position in POSITIONS for name in (*sorted(COLORS), *SHAPES))
"""What each entry of a scene's code says: "top left red" (the shape at the top left is red), ..."""
PROJECTION_SEED = 19
"""Seed of the fixed map from attributes to voxels."""
REPEATS = 3
"""Scans per scene."""
NOISE = 0.1
"""Standard deviation of each scan's noise; the map's entries have deviation 1."""
SCENE_SIZE = 56
"""Side of the (unsaved) scene the attributes are drawn from; only its random draws matter."""


@lru_cache(maxsize=4)
def projection(num_voxels: int) -> np.ndarray:
    """The fixed `(len(ATTRIBUTES), num_voxels)` map from a scene's code to its betas (do not modify it: cached)."""
    return np.random.default_rng(PROJECTION_SEED).standard_normal((len(ATTRIBUTES), num_voxels))


def code(shapes: list[Shape]) -> np.ndarray:
    """`(len(ATTRIBUTES),)`: ones for the colour and the kind of the shape in each quadrant."""
    present = {f"{s.position} {s.color}" for s in shapes} | {f"{s.position} {s.kind}" for s in shapes}
    return np.array([float(name in present) for name in ATTRIBUTES])


def make(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.npy` `(REPEATS, fmri_num_voxels)` and describe its scene."""
    _, shapes = draw_scene(rng, SCENE_SIZE)
    gen = numpy_rng(rng)
    clean = code(shapes) @ projection(config.fmri_num_voxels)
    betas = clean + gen.normal(0, NOISE, (REPEATS, config.fmri_num_voxels))
    np.save(folder / f"{stem}.npy", betas.astype(np.float32))
    return Item(value=f"{folder.name}/{stem}.npy", caption=caption(shapes),
                questions={qtype: ask(rng, shapes, qtype) for qtype in QUESTION_TYPES})  # fmt: skip
