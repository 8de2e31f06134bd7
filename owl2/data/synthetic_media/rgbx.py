"""Synthetic images, rgbd and rgbn: the image set's scenes (`synthetic.draw_scene`), alone or with a depth or a
normal map; PNG. The image alone is the image set's (its captions and question types), in this set's layout.

Depth maps are 8-bit grey in the convention of the release's DPT maps, nearer brighter: the background is
farthest (20-40), a near shape 190-240, a far one 80-120. Normal maps are RGB `(n + 1) / 2 * 255` with x to
the right, y up and z towards the viewer: the background faces the viewer (128, 128, 255), each shape is a
plane turned 30-60 degrees to face left or right. A shape's pixels are found by its exact colour in the image.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image

from owl2.data.synthetic import COLORS, NUMBERS, QUESTION_TYPES, SHAPES, Shape, ask, caption, draw_scene
from owl2.data.synthetic_media.common import Item
from owl2.processing.media.config import MediaConfig

IMAGE_QUESTION_TYPES = QUESTION_TYPES
"""What can be asked of an image: the image set's question types."""
IMAGE_TYPES = ("color", "shape", "position")
"""The image set's question types also asked here."""
RGBD_TYPES = ("depth", *IMAGE_TYPES)
"""What can be asked of an rgbd input."""
RGBN_TYPES = ("facing", *IMAGE_TYPES)
"""What can be asked of an rgbn input."""
DEPTHS = {"near": (190, 240), "far": (80, 120)}
"""Depth word -> the range of the shape's grey level in the map."""


def _scene(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> tuple[list[Shape], list[np.ndarray]]:
    """Draw and save `folder/stem.png`; its shapes, and each shape's pixels (found by its exact colour)."""
    image, shapes = draw_scene(rng, config.image_size)
    image.save(folder / f"{stem}.png", format="PNG")
    pixels = np.asarray(image)
    masks = [(pixels == COLORS[shape.color]).all(axis=2) for shape in shapes]
    return shapes, masks


def _items(
    rng: random.Random, shapes: list[Shape], attribute: dict[str, str], part: str, question: str, name: str, value
) -> Item:
    """The item: the caption (the image set's, by kind, each shape written by `part`) and the questions (`name`
    asks `question` of one shape, answered by its `attribute`; then the image set's `IMAGE_TYPES`)."""
    by_kind = sorted(shapes, key=lambda s: SHAPES.index(s.kind))
    parts = [part.format(attr=attribute[s.color], color=s.color, kind=s.kind, position=s.position) for s in by_kind]
    noun = "shape" if len(shapes) == 1 else "shapes"
    target = rng.choice(shapes)
    questions = {name: (question.format(color=target.color, kind=target.kind), attribute[target.color])}
    questions |= {qtype: ask(rng, shapes, qtype) for qtype in IMAGE_TYPES}
    text = f"{NUMBERS[len(shapes)]} {noun} : " + " , ".join(parts) + " ."
    return Item(value=value, caption=text, questions=questions)


def make_image(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.png` and describe it as the image set does."""
    image, shapes = draw_scene(rng, config.image_size)
    image.save(folder / f"{stem}.png", format="PNG")
    questions = {qtype: ask(rng, shapes, qtype) for qtype in IMAGE_QUESTION_TYPES}
    return Item(value=f"{folder.name}/{stem}.png", caption=caption(shapes), questions=questions)


def make_rgbd(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.png` and its depth map `folder/stem_depth.png`, and describe them."""
    shapes, masks = _scene(rng, config, folder, stem)
    depth = np.full(masks[0].shape, rng.randint(20, 40), dtype=np.uint8)
    words = {}
    for shape, mask in zip(shapes, masks):
        words[shape.color] = rng.choice(sorted(DEPTHS))
        depth[mask] = rng.randint(*DEPTHS[words[shape.color]])
    Image.fromarray(depth).save(folder / f"{stem}_depth.png", format="PNG")
    value = [f"{folder.name}/{stem}.png", f"{folder.name}/{stem}_depth.png"]
    part, question = "a {attr} {color} {kind} at the {position}", "is the {color} {kind} near or far ?"
    return _items(rng, shapes, words, part, question, "depth", value)


def make_rgbn(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.png` and its normal map `folder/stem_normal.png`, and describe them."""
    shapes, masks = _scene(rng, config, folder, stem)
    normal = np.zeros((*masks[0].shape, 3), dtype=np.uint8)
    normal[:] = (128, 128, 255)
    words = {}
    for shape, mask in zip(shapes, masks):
        words[shape.color] = rng.choice(("left", "right"))
        angle = math.radians(rng.uniform(30, 60)) * (-1 if words[shape.color] == "left" else 1)
        n = np.array([math.sin(angle), 0.0, math.cos(angle)])
        normal[mask] = np.round((n + 1) / 2 * 255).astype(np.uint8)
    Image.fromarray(normal).save(folder / f"{stem}_normal.png", format="PNG")
    value = [f"{folder.name}/{stem}.png", f"{folder.name}/{stem}_normal.png"]
    part, question = "a {color} {kind} facing {attr} at the {position}", "where is the {color} {kind} facing ?"
    return _items(rng, shapes, words, part, question, "facing", value)
