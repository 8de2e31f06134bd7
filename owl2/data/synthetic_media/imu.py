"""Synthetic IMU: `imu_num_samples` samples at `imu_rate` (so no timestamps file), `.npy` (6, T).

Channels accelerometer x, y, z (m/s^2, gravity on z) then gyroscope x, y, z (rad/s). Standing still is
gravity plus sensor noise; walking adds three to five periodic vertical bumps (and a sideways sway at half
the rate) over the window; turning adds a steady rotation about z. The bumps are timed by the window, not
by a human gait, so that the toy's 0.1 s window holds several.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from owl2.data.synthetic_media.common import Item, numpy_rng
from owl2.processing.media.config import MediaConfig

QUESTION_TYPES = ("motion",)
"""What can be asked of a recording."""
MOTIONS = ("still", "walking", "turning")
"""Motion patterns."""
GRAVITY = 9.81
"""m/s^2 on the accelerometer's z axis."""


def signal(motion: str, samples: int, rate: int, gen: np.random.Generator) -> np.ndarray:
    """`(6, samples)` of `motion`."""
    t = np.arange(samples) / rate
    data = np.zeros((6, samples))
    data[2] = GRAVITY
    if motion == "walking":
        cycles = gen.uniform(3, 5)
        frequency = cycles * rate / samples
        amplitude = gen.uniform(1.5, 3.0)
        phase = gen.uniform(0, 2 * np.pi)
        data[2] += amplitude * np.sin(2 * np.pi * frequency * t + phase)
        data[0] += 0.3 * amplitude * np.sin(np.pi * frequency * t + phase)
    elif motion == "turning":
        data[5] = gen.choice((-1.0, 1.0)) * gen.uniform(1.0, 2.0)
        data[0] += gen.uniform(0.1, 0.3)  # centripetal
    data[:3] += gen.normal(0, 0.03, (3, samples))
    data[3:] += gen.normal(0, 0.01, (3, samples))
    return data


def make(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.npy` and describe it."""
    if config.imu_num_channels != 6:
        raise ValueError(f"synthetic IMU has 6 channels; MediaConfig.imu_num_channels is {config.imu_num_channels}")
    motion = rng.choice(MOTIONS)
    data = signal(motion, config.imu_num_samples, config.imu_rate, numpy_rng(rng))
    np.save(folder / f"{stem}.npy", data.astype(np.float32))
    return Item(value=f"{folder.name}/{stem}.npy", caption=f"it is {motion} .",
                questions={"motion": ("how is it moving ?", motion)})  # fmt: skip
