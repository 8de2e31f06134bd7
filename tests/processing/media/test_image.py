"""Images to `(3, S, S)` against the release's evaluation transform, written as the release writes it (torchvision's
Resize + CenterCrop + ToTensor + Normalize), and one error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from owl2.processing.media.errors import MediaError
from owl2.processing.media.image import load_image, transform_image
from tests.processing.media.conftest import CLIP_MEAN, CLIP_STD

ATOL = 1e-6  # float32 normalisation on both sides (rescaling rounds differently by an ulp)


def official_eval(size: int) -> T.Compose:
    """`T_resized_center_crop` of eval/image_cap_cococap.py, at `size`."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)])  # fmt: skip


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


# (231, 224): a crop offset of 3.5 rounds half to even (torchvision: 4) where a floor gives 3 (transformers)
@pytest.mark.parametrize("width, height", [(231, 300), (300, 231), (640, 480), (480, 640), (224, 224), (100, 60),
                                           (227, 224), (229, 224)])  # fmt: skip
def test_matches_the_official_eval_transform(width, height):
    image = noise_image(width, height, seed=width)
    out = transform_image(image, 224)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, official_eval(224)(image), rtol=0, atol=ATOL)


def test_toy_size_from_a_file(tmp_path, toy_media):
    noise_image(50, 37, seed=1).save(tmp_path / "cat.png")
    out = load_image(tmp_path / "cat.png", toy_media)
    assert out.shape == (3, 28, 28)
    expected = official_eval(28)(Image.open(tmp_path / "cat.png").convert("RGB"))
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_any_mode_and_an_opened_image(mode):
    image = noise_image(64, 48, mode=mode)
    torch.testing.assert_close(load_image(image), official_eval(224)(image.convert("RGB")), rtol=0, atol=ATOL)


def test_missing_wrong_suffix_and_unreadable(tmp_path):
    with pytest.raises(MediaError, match=r"cat.jpg: no such file; expected an existing image file \(.jpg, .jpeg"):
        load_image(tmp_path / "cat.jpg")
    (tmp_path / "cat.mp4").write_bytes(b"x")
    with pytest.raises(MediaError, match=r"cat.mp4: unsupported file type '.mp4' for image; expected .jpg"):
        load_image(tmp_path / "cat.mp4")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match=r"junk.png' is not a readable image .*; expected an image file"):
        load_image(tmp_path / "junk.png")
    noise_image(64, 48).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:500])
    with pytest.raises(MediaError, match=r"cut.png' is corrupt or truncated"):
        load_image(tmp_path / "cut.png")
