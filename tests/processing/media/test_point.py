"""Point clouds against the release's `pc_norm` restated in numpy, resampling, and one error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from owl2.processing.media.config import MediaConfig
from owl2.processing.media.errors import MediaError
from owl2.processing.media.point import load_point, transform_points

ATOL = 1e-5  # float32 against a float64 reference: the centroid of 8192 points around z = 10 rounds by ~3e-6


def official_pc_norm(pc: np.ndarray) -> np.ndarray:
    """data_utils.pc_norm, in float64: xyz minus their centroid, divided by the largest norm; the rest as it is."""
    pc = pc.astype(np.float64)
    xyz = pc[:, :3] - pc[:, :3].mean(axis=0)
    xyz = xyz / np.sqrt((xyz**2).sum(axis=1)).max()
    return np.concatenate([xyz, pc[:, 3:]], axis=1)


def cloud(points: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal([3.0, -1.0, 10.0], [2.0, 0.5, 1.0], (points, 3))
    return np.concatenate([xyz, rng.random((points, 3))], axis=1).astype(np.float32)  # rgb in [0, 1], as PointLLM's


def test_matches_the_release_pc_norm(tmp_path):
    np.save(tmp_path / "chair_8192.npy", cloud(8192))
    out = load_point(tmp_path / "chair_8192.npy")
    assert out.shape == (8192, 6) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), official_pc_norm(cloud(8192)), rtol=0, atol=ATOL)
    assert torch.isclose(out[:, :3].norm(dim=1).max(), torch.tensor(1.0))
    np.testing.assert_array_equal(out[:, 3:].numpy(), cloud(8192)[:, 3:])  # colours untouched, not / 255


@pytest.mark.parametrize("points, target", [(100, 40), (30, 40), (40, 40)])
def test_resampling_to_a_fixed_size_uses_evenly_spaced_points(points, target):
    config = MediaConfig(point_num_points=target, point_min_points=8)
    indices = np.floor(np.arange(target) * points / target).astype(int)
    expected = official_pc_norm(cloud(points)[indices])
    np.testing.assert_allclose(transform_points(cloud(points), config).numpy(), expected, rtol=0, atol=ATOL)


def test_float64_and_integer_files_become_float32(tmp_path):
    np.save(tmp_path / "p.npy", cloud(50).astype(np.float64))
    assert load_point(tmp_path / "p.npy", MediaConfig(point_min_points=8)).dtype == torch.float32
    ints = (cloud(50) * 100).astype(np.int32)
    np.testing.assert_allclose(transform_points(ints, MediaConfig(point_min_points=8)).numpy(),
                               official_pc_norm(ints.astype(np.float32)), rtol=0, atol=ATOL)  # fmt: skip


@pytest.mark.parametrize("array, match", [
    (np.zeros((100, 3), np.float32), r"point cloud of shape \(100, 3\); expected \(points, 6\)"),
    (np.zeros((2, 100, 6), np.float32), r"point cloud of shape \(2, 100, 6\); expected \(points, 6\)"),
    (np.full((100, 6), np.nan, np.float32), "600 of 600 point values are NaN or infinite; expected finite numbers"),
    (np.ones((100, 6), np.float32), "all 100 points have the same xyz; expected a cloud with extent"),
    (cloud(5), "5 points; expected at least 8"),
    (np.array([["a"] * 6] * 20), "point values of dtype <U1; expected real numbers"),
])  # fmt: skip
def test_bad_clouds(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(MediaError, match=f"bad.npy: {match}"):
        load_point(tmp_path / "bad.npy", MediaConfig(point_min_points=8))


def test_the_release_needs_1024_points():
    with pytest.raises(MediaError, match="1000 points; expected at least 1024"):
        transform_points(cloud(1000), source="small.npy")


def test_missing_wrong_suffix_unreadable_and_pickles(tmp_path):
    with pytest.raises(MediaError, match=r"gone.npy: no such file; expected an existing point file \(.npy\)"):
        load_point(tmp_path / "gone.npy")
    with pytest.raises(MediaError, match=r"cloud.ply: unsupported file type '.ply' for point; expected .npy"):
        load_point(tmp_path / "cloud.ply")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MediaError, match=r"junk.npy: cannot read as a .npy array .*; expected a point cloud"):
        load_point(tmp_path / "junk.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MediaError, match=r"objects.npy: cannot read as a .npy array"):
        load_point(tmp_path / "objects.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    (tmp_path / "two.npz").rename(tmp_path / "two.npy")
    with pytest.raises(MediaError, match=r"two.npy: holds several arrays \(.npz\); expected one array"):
        load_point(tmp_path / "two.npy")
