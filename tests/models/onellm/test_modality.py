"""The modality tokenizers: farthest point sampling, grouping, token order, float32 points, shape errors."""

from __future__ import annotations

import re

import pytest
import torch
from torch.testing import assert_close

from owl2.models.modality.audio import AudioTokenizer
from owl2.models.modality.fmri import FmriTokenizer
from owl2.models.modality.imu import ImuTokenizer
from owl2.models.modality.point import PointTokenizer, farthest_point_sample, knn_indices
from tests.models.onellm.conftest import TOY, randomise, tokenizer_config, toy_inputs
from tests.models.onellm.official_reference import reference_fps

WIDTH = TOY.clip_width


def _cloud(batch: int, points: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, points, 6, generator=torch.Generator().manual_seed(seed))


def test_fps_matches_the_pointnet2_loop_and_starts_at_point_zero():
    coords = _cloud(3, 50, seed=0)[..., :3]
    picked = farthest_point_sample(coords, 12)
    assert picked.shape == (3, 12) and picked.dtype == torch.long
    assert picked[:, 0].tolist() == [0, 0, 0]
    assert picked.tolist() == [reference_fps(cloud, 12) for cloud in coords]
    assert all(len(set(row)) == 12 for row in picked.tolist())


def test_fps_can_take_every_point_and_refuses_more():
    coords = _cloud(1, 9, seed=1)[..., :3]
    assert sorted(farthest_point_sample(coords, 9)[0].tolist()) == list(range(9))
    with pytest.raises(ValueError, match="cannot sample 10 points from a cloud of 9"):
        farthest_point_sample(coords, 10)


def test_knn_finds_the_nearest_points_nearest_first():
    coords = _cloud(2, 30, seed=2)[..., :3]
    centres = coords[:, [0, 7, 11]]
    found = knn_indices(coords, centres, 5)  # (2, 3, 5)
    brute = ((coords[:, None] - centres[:, :, None]) ** 2).sum(-1).argsort(dim=-1)[..., :5]
    assert found.shape == (2, 3, 5)
    assert torch.equal(found, brute)
    assert found[0, :, 0].tolist() == [0, 7, 11]  # each centre is its own nearest neighbour


def test_rgb_sampling_is_xyz_sampling_of_the_cloud_with_its_columns_swapped():
    rgb = randomise(PointTokenizer(tokenizer_config(point_sample_on="rgb"), WIDTH), seed=0)
    xyz = PointTokenizer(tokenizer_config(point_sample_on="xyz"), WIDTH)
    swap = [3, 4, 5, 0, 1, 2]
    with torch.no_grad():
        xyz.proj.weight.copy_(rgb.proj.weight[:, swap])
        xyz.proj.bias.copy_(rgb.proj.bias)
    cloud = _cloud(2, TOY.points, seed=3)
    with torch.no_grad():
        assert_close(rgb(cloud), xyz(cloud[..., swap]), rtol=1e-5, atol=1e-5)
        # ... and the choice matters: on the same cloud the two settings pick other centres.
        assert not torch.allclose(rgb(cloud), randomise(xyz, seed=0)(cloud))
    picked_on_rgb = farthest_point_sample(cloud[..., 3:6].contiguous(), TOY.point_groups)
    picked_on_xyz = farthest_point_sample(cloud[..., :3].contiguous(), TOY.point_groups)
    assert not torch.equal(picked_on_rgb, picked_on_xyz)


def test_points_are_tokenized_in_float32_even_under_bfloat16_autocast():
    tokenizer = randomise(PointTokenizer(tokenizer_config(), WIDTH), seed=1)
    cloud = _cloud(2, TOY.points, seed=4)
    with torch.no_grad():
        plain = tokenizer(cloud)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = tokenizer(cloud)
    assert autocast.dtype == torch.float32
    assert torch.equal(plain, autocast)


def test_a_cloud_smaller_than_the_groups_is_refused():
    tokenizer = PointTokenizer(tokenizer_config(), WIDTH)
    with pytest.raises(ValueError, match=r"at least 8 points .* got shape \(1, 5, 6\)"):
        tokenizer(_cloud(1, 5, seed=0))


def test_audio_tokens_are_mel_major_patches():
    tokenizer = randomise(AudioTokenizer(tokenizer_config(), WIDTH), seed=2)
    spectrogram = toy_inputs("audio", batch=1)
    with torch.no_grad():
        tokens = tokenizer(spectrogram)  # (1, rows * cols, D)
    rows, cols = tokenizer_config().audio_grid
    assert tokens.shape == (1, rows * cols, WIDTH)
    r, c, p, s = 3, 5, TOY.audio_patch, TOY.audio_stride
    patch = spectrogram[0, 0, r * s : r * s + p, c * s : c * s + p]
    expected = (tokenizer.proj.weight[:, 0] * patch).sum((-1, -2)) + tokenizer.proj.bias
    assert_close(tokens[0, r * cols + c], expected, rtol=1e-5, atol=1e-5)


def test_fmri_tokens_read_the_linear_output_channel_major():
    tokenizer = randomise(FmriTokenizer(tokenizer_config(), WIDTH), seed=3)
    betas = toy_inputs("fmri", batch=2)
    with torch.no_grad():
        tokens, flat = tokenizer(betas), tokenizer.proj(betas)[:, 0]  # (2, T, D), (2, D * T)
    t, c = 2, 5
    assert tokens.shape == (2, TOY.fmri_tokens, WIDTH)
    assert torch.equal(tokens[:, t, c], flat[:, c * TOY.fmri_tokens + t])


def test_imu_yields_one_token_per_kernel_position_without_bias():
    tokenizer = ImuTokenizer(tokenizer_config(), WIDTH)
    assert tokenizer.proj.bias is None
    assert tokenizer(toy_inputs("imu")).shape == (2, TOY.imu_samples - TOY.imu_kernel + 1, WIDTH)


@pytest.mark.parametrize(
    ("tokenizer", "modality", "shape", "expected"),
    [
        (AudioTokenizer, "audio", (2, 1, TOY.mel_bins, 30), f"(N, 1, {TOY.mel_bins}, {TOY.audio_frames})"),
        (AudioTokenizer, "audio", (2, TOY.mel_bins, TOY.audio_frames), f"(N, 1, {TOY.mel_bins}, {TOY.audio_frames})"),
        (PointTokenizer, "point", (2, TOY.points, 3), "(N, P, 6)"),
        (ImuTokenizer, "imu", (2, 3, TOY.imu_samples), f"(N, 6, {TOY.imu_samples})"),
        (FmriTokenizer, "fmri", (2, TOY.voxels), f"(N, 1, {TOY.voxels})"),
    ],
)
def test_a_wrong_input_shape_is_refused_naming_both_shapes(tokenizer, modality, shape, expected):
    module = tokenizer(tokenizer_config(), WIDTH)
    message = re.escape(f"{modality} input must have shape {expected} ") + ".*" + re.escape(f", got {tuple(shape)}")
    with pytest.raises(ValueError, match=message):
        module(torch.zeros(shape))
