"""Synthetic point clouds: points on the surface of a sphere, a cube or a cone, in one colour; `.npy` (N, 6).

Columns x, y, z then r, g, b in [0, 1] (PointLLM's layout), float32. N is the release's fewest, 1024, or
more when the `MediaConfig` asks for more. The shapes are axis-aligned, at a random scale and place.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from owl2.data.synthetic import COLORS
from owl2.data.synthetic_media.common import Item, numpy_rng
from owl2.processing.media.config import MediaConfig

QUESTION_TYPES = ("shape", "color")
"""What can be asked of a cloud."""
KINDS = ("sphere", "cube", "cone")
"""Surface kinds."""
MIN_POINTS = 1024
"""Fewest points written: the release's `point_min_points`."""


def surface(kind: str, count: int, gen: np.random.Generator) -> np.ndarray:
    """`(count, 3)` points uniform over the unit sphere, the cube [-1, 1]^3, or a cone (base radius 1, height 2)."""
    if kind == "sphere":
        xyz = gen.normal(size=(count, 3))
        return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
    if kind == "cube":
        xyz = gen.uniform(-1, 1, size=(count, 3))
        axis = gen.integers(0, 3, count)
        xyz[np.arange(count), axis] = gen.choice((-1.0, 1.0), count)  # one coordinate on a face
        return xyz
    slant = math.sqrt(5)  # lateral area pi * r * slant against the base's pi * r^2, r = 1
    lateral = gen.uniform(size=count) < slant / (slant + 1)
    rho = np.sqrt(gen.uniform(size=count))  # area-uniform distance from the axis, as a fraction of r
    angle = gen.uniform(0, 2 * np.pi, count)
    z = np.where(lateral, 2 * (1 - rho), 0.0)  # the lateral surface narrows from the base (z = 0) to the apex (z = 2)
    return np.stack([rho * np.cos(angle), rho * np.sin(angle), z], axis=1)


def make(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.npy` and describe it."""
    kind = rng.choice(KINDS)
    color = rng.choice(sorted(COLORS))
    gen = numpy_rng(rng)
    count = max(MIN_POINTS, config.point_min_points, config.point_num_points or 0)
    xyz = surface(kind, count, gen) * gen.uniform(0.5, 2.0) + gen.normal(0, 1, 3)
    rgb = np.clip(np.array(COLORS[color]) / 255 + gen.normal(0, 0.02, (count, 3)), 0, 1)
    np.save(folder / f"{stem}.npy", np.concatenate([xyz, rgb], axis=1).astype(np.float32))
    return Item(
        value=f"{folder.name}/{stem}.npy",
        caption=f"a {color} {kind} .",
        questions={
            "shape": (f"what shape is the {color} object ?", kind),
            "color": (f"what color is the {kind} ?", color),
        },
    )
