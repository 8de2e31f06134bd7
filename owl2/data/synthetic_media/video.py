"""Synthetic video: one coloured shape moving left, right, up or down, with a fading trail behind it; mp4.

64 x 64 pixels at 8 fps, lasting one clip more than a second (`video_clip_duration` + 1 s), so the release's
five clips show the shape at five places. The trail (two paler copies at the shape's earlier places) shows the
direction in every single frame, as the toy model's one clip keeps only the first. Encoded with lossless
H.264 (x264, one thread, for the same bytes every time) through PyAV, imported here only.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from owl2.data.synthetic import BACKGROUNDS, COLORS, SHAPES
from owl2.data.synthetic import draw_shape
from owl2.data.synthetic_media.common import Item
from owl2.processing.media.config import MediaConfig

QUESTION_TYPES = ("direction", "color", "shape")
"""What can be asked of a video."""
SIZE = 64
"""Frame side in pixels."""
FPS = 8
"""Frames per second."""
SIDE = 16
"""The shape's side in pixels."""
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Direction -> unit step (x, y) in image coordinates (y down)."""
TRAIL = ((3, 0.2), (2, 0.35), (1, 0.5))
"""The trail's copies, oldest first: (how many trail steps behind the shape, share of the shape's colour)."""
TRAIL_STEP = 5
"""Pixels between the trail's copies."""


def frames(color: str, kind: str, direction: str, background, across: float, count: int) -> list[np.ndarray]:
    """`count` RGB frames `(SIZE, SIZE, 3)` of the shape moving from 30% to 70% of the frame along `direction`.

    Args:
        across: Where the path lies across the motion, as a fraction of the frame.
    """
    dx, dy = DIRECTIONS[direction]
    fill = np.array(COLORS[color], dtype=float)
    out = []
    for i in range(count):
        along = 0.3 + 0.4 * i / max(count - 1, 1)  # fraction of the way, in the direction of motion
        along = along if dx + dy > 0 else 1 - along
        cx, cy = (along, across) if dx else (across, along)
        image = Image.new("RGB", (SIZE, SIZE), background)
        draw = ImageDraw.Draw(image)
        for behind, share in (*TRAIL, (0, 1.0)):
            x = int(round(cx * SIZE - dx * behind * TRAIL_STEP - SIDE / 2))
            y = int(round(cy * SIZE - dy * behind * TRAIL_STEP - SIDE / 2))
            tone = tuple(int(round(v)) for v in share * fill + (1 - share) * np.array(background))
            draw_shape(draw, kind, (x, y, x + SIDE - 1, y + SIDE - 1), tone)
        out.append(np.asarray(image))
    return out


def write_mp4(path: Path, pictures: list[np.ndarray], fps: int = FPS) -> None:
    """RGB frames as lossless H.264 in yuv420p."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = pictures[0].shape[1], pictures[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "threads": "1"}
        for picture in pictures:
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.mp4` and describe it."""
    color = rng.choice(sorted(COLORS))
    kind = rng.choice(SHAPES)
    direction = rng.choice(sorted(DIRECTIONS))
    background = rng.choice(BACKGROUNDS)
    across = rng.uniform(0.3, 0.7)
    count = int(round((config.video_clip_duration + 1) * FPS))
    write_mp4(folder / f"{stem}.mp4", frames(color, kind, direction, background, across, count))
    return Item(
        value=f"{folder.name}/{stem}.mp4",
        caption=f"a {color} {kind} moving {direction} .",
        questions={
            "direction": (f"where is the {color} {kind} moving ?", direction),
            "color": (f"what color is the {kind} ?", color),
            "shape": (f"what shape is the {color} object ?", kind),
        },
    )
