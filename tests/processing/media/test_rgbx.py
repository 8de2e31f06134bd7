"""An image and its depth or normal map against the release's `load_rgbx` + `transform_pairimg_train` (seeded), the
evaluation crop (the image transform on both), 1-channel and 16-bit maps, and the bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from owl2.processing.media.errors import MediaError
from owl2.processing.media.rgbx import load_rgbx, transform_rgbx
from tests.processing.media.conftest import CLIP_MEAN, CLIP_STD
from tests.processing.media.test_image import ATOL, noise_image, official_eval


def official_pair_train(image: Image.Image, x_image: Image.Image, size: int, seed: int) -> torch.Tensor:
    """load_rgbx with transform_pairimg_train, the global generator seeded first."""
    image, x_image = image.convert("RGB"), x_image.convert("RGB")
    x_image = x_image.resize(image.size[-2:])
    torch.manual_seed(seed)
    i, j, h, w = T.RandomResizedCrop.get_params(image, (0.9, 1.0), (0.75, 1.3333))
    bicubic = T.InterpolationMode.BICUBIC
    pair = [TF.resized_crop(p, i, j, h, w, [size, size], bicubic, antialias=None) for p in (image, x_image)]
    pair = [TF.normalize(TF.to_tensor(p), CLIP_MEAN, CLIP_STD) for p in pair]
    return torch.stack(pair)


def depth_map(width: int, height: int, mode: str = "RGB") -> Image.Image:
    ramp = np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
    return Image.fromarray(np.stack([ramp, 255 - ramp, ramp // 2], axis=-1)).convert(mode)


@pytest.mark.parametrize("seed", [0, 7])
def test_the_seeded_training_crop_is_the_release_crop(seed):
    # near square, so that torchvision's draws succeed (at 3:2 every draw fails and it falls back to a centre crop)
    image, x_map = noise_image(260, 230, seed=1), depth_map(130, 115)  # the map at half size: resized to the image's
    out = transform_rgbx(image, x_map, size=224, seed=seed)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, official_pair_train(image, x_map, 224, seed), rtol=0, atol=ATOL)
    assert not torch.equal(out, transform_rgbx(image, x_map, size=224, seed=seed + 1))


def test_the_training_crop_leaves_the_global_generator_alone():
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    transform_rgbx(noise_image(64, 48), depth_map(64, 48), size=28, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_the_evaluation_crop_is_the_image_transform_on_both(tmp_path, toy_media):
    noise_image(90, 60, seed=2).save(tmp_path / "room.jpg")
    depth_map(90, 60).save(tmp_path / "room_depth.png")
    out = load_rgbx(tmp_path / "room.jpg", tmp_path / "room_depth.png", toy_media)
    assert out.shape == (2, 3, 28, 28)
    expected = [official_eval(28)(Image.open(tmp_path / f).convert("RGB")) for f in ("room.jpg", "room_depth.png")]
    torch.testing.assert_close(out, torch.stack(expected), rtol=0, atol=ATOL)


def test_one_channel_and_16_bit_depth_are_replicated_to_three_channels():
    image = noise_image(40, 40)
    grey = depth_map(40, 40, mode="L")
    out = transform_rgbx(image, grey, size=28)
    torch.testing.assert_close(out[1], official_eval(28)(grey.convert("RGB")), rtol=0, atol=ATOL)
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit depth, 65535 at the far end
    assert deep.mode.startswith("I")
    torch.testing.assert_close(transform_rgbx(image, deep, size=28)[1], out[1], rtol=0, atol=ATOL)


def test_bad_files_name_the_modality(tmp_path):
    noise_image(40, 40).save(tmp_path / "room.jpg")
    with pytest.raises(MediaError, match=r"room_normal.png: no such file; expected an existing rgbn file"):
        load_rgbx(tmp_path / "room.jpg", tmp_path / "room_normal.png", modality="rgbn")
    (tmp_path / "depth.exr").write_bytes(b"x")
    with pytest.raises(MediaError, match=r"depth.exr: unsupported file type '.exr' for rgbd"):
        load_rgbx(tmp_path / "room.jpg", tmp_path / "depth.exr")
