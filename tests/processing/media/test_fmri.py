"""fMRI betas against the release's `load_fmri` restated in numpy, and one error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from owl2.processing.media.errors import MediaError
from owl2.processing.media.fmri import load_fmri, transform_fmri


def official_load_fmri(path) -> np.ndarray:
    data = np.load(path)
    return data.mean(axis=0)[None]


def test_repeats_are_averaged_as_the_release_does(tmp_path):
    betas = np.random.default_rng(0).standard_normal((3, 15724)).astype(np.float32)
    np.save(tmp_path / "scan.npy", betas)
    out = load_fmri(tmp_path / "scan.npy")
    assert out.shape == (1, 15724) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), official_load_fmri(tmp_path / "scan.npy"), rtol=0, atol=1e-6)


def test_one_scan_is_taken_as_it_is(toy_media):
    betas = np.arange(50, dtype=np.float64)
    torch.testing.assert_close(transform_fmri(betas, toy_media), torch.arange(50.0)[None])


@pytest.mark.parametrize("array, match", [
    (np.zeros((3, 49)), r"fMRI betas of shape \(3, 49\); expected \(50,\) or \(repeats, 50\)"),
    (np.zeros(51), r"fMRI betas of shape \(51,\); expected \(50,\) or \(repeats, 50\)"),
    (np.zeros((0, 50)), r"fMRI betas of shape \(0, 50\); expected .* with at least one repeat"),
    (np.zeros((2, 3, 50)), r"fMRI betas of shape \(2, 3, 50\)"),
    (np.array([np.inf] * 50), "50 of 50 fMRI values are NaN or infinite"),
])  # fmt: skip
def test_bad_files(tmp_path, toy_media, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(MediaError, match=f"bad.npy: {match}"):
        load_fmri(tmp_path / "bad.npy", toy_media)


def test_missing_and_wrong_suffix(tmp_path):
    with pytest.raises(MediaError, match=r"gone.npy: no such file; expected an existing fmri file \(.npy\)"):
        load_fmri(tmp_path / "gone.npy")
    with pytest.raises(MediaError, match=r"scan.nii: unsupported file type '.nii' for fmri; expected .npy"):
        load_fmri(tmp_path / "scan.nii")
