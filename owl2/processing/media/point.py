"""Point clouds to `(points, 6)`: official `data/pretrain_dataset.py` and `eval/point_cap_pointllm.py`
(`np.load` of PointLLM's `*_8192.npy`, then `pc_norm` from `data/data_utils.py`).

`pc_norm` centres the xyz columns on their mean and divides them by the largest distance from it, so the
cloud fits the unit sphere; the other columns (rgb, in [0, 1] in PointLLM's files) are left as they are.
The release feeds its 8192 points as they are; `MediaConfig.point_num_points` optionally resamples every
cloud to one size (before normalising) by evenly spaced indices, repeating points when there are fewer.

Differences: the release's instruction-tuning loader reads `.pt` files without `pc_norm`; only `.npy` here,
always normalised. Computed in float32 (PointLLM's files are float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from owl2.processing.media.arrays import check_numbers, load_npy

from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError, check_file


def normalize_points(points: torch.Tensor) -> torch.Tensor:
    """`pc_norm`: `(P, F)` with xyz first -> xyz centred and scaled into the unit sphere, other columns kept."""
    xyz = points[:, :3] - points[:, :3].mean(dim=0)
    radius = xyz.norm(dim=1).max()
    return torch.cat([xyz / radius, points[:, 3:]], dim=1)


def resample_points(points: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows of `points` at evenly spaced indices floor(i * P / count): every row once when P == count."""
    indices = torch.arange(count) * points.shape[0] // count
    return points[indices]


def transform_points(
    points: np.ndarray | torch.Tensor, config: MediaConfig = MediaConfig(), source: str | Path = "point input"
) -> torch.Tensor:
    """A `(P, point_num_features)` cloud to the normalised `(P', point_num_features)` float32 model input.

    Raises:
        MediaError: If the shape is wrong, values are not finite, there are too few points, or all points
            coincide (the unit-sphere scale would divide by zero).
    """
    points = check_numbers(points, source, "point values")
    features = config.point_num_features
    if points.dim() != 2 or points.shape[1] != features:
        raise MediaError(f"{source}: point cloud of shape {tuple(points.shape)}; expected (points, {features})")
    if points.shape[0] < config.point_min_points:
        raise MediaError(
            f"{source}: {points.shape[0]} points; expected at least {config.point_min_points} "
            "(the point tokenizer's groups and neighbours)"
        )
    if config.point_num_points is not None:
        points = resample_points(points, config.point_num_points)
    if torch.equal(points[:, :3].amin(dim=0), points[:, :3].amax(dim=0)):
        raise MediaError(f"{source}: all {points.shape[0]} points have the same xyz; expected a cloud with extent")
    return normalize_points(points)


def load_point(path: str | Path, config: MediaConfig = MediaConfig()) -> torch.Tensor:
    """A `.npy` point cloud `(P, 6)` (xyz then rgb) as the normalised `(P', 6)` float32 model input."""
    path = check_file(path, "point", MEDIA_SUFFIXES["point"])
    return transform_points(load_npy(path, f"a point cloud (points, {config.point_num_features})"), config, source=path)
