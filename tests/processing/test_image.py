"""Owl2ImageProcessor against an independent re-statement of the official pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from owl2.processing.image import Owl2ImageProcessor, to_rgb

# the official release's preprocessor_config.json (CLIP ViT-L/14 at 448)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def official_expand2square(image: Image.Image, color) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    if width > height:
        out = Image.new(image.mode, (width, width), color)
        out.paste(image, (0, (width - height) // 2))
        return out
    out = Image.new(image.mode, (height, height), color)
    out.paste(image, ((height - width) // 2, 0))
    return out


def official_clip(image: Image.Image, size: int) -> np.ndarray:
    """Slow CLIPImageProcessor: PIL bicubic shortest-edge resize, centre crop, rescale, normalise."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    array = np.asarray(image)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    array = array[top : top + size, left : left + size]
    array = (array.astype(np.float64) / 255.0).astype(np.float32)
    array = (array - MEAN) / STD
    return array.transpose(2, 0, 1)


def official(image: Image.Image, size: int, aspect: str) -> torch.Tensor:
    image = image.convert("RGB")
    if aspect == "pad":
        image = official_expand2square(image, tuple(int(x * 255) for x in MEAN.tolist()))
    else:
        edge = max(image.size)
        image = image.resize((edge, edge))
    return torch.from_numpy(official_clip(image, size))


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("aspect", ["pad", "resize"])
@pytest.mark.parametrize(("width", "height", "size"), [(37, 81, 56), (101, 45, 56), (56, 56, 56), (333, 217, 448)])
def test_matches_official(aspect, width, height, size):
    image = noise_image(width, height, seed=width * height)
    got = Owl2ImageProcessor(size=size, aspect=aspect)([image])
    assert got.shape == (1, 3, size, size) and got.dtype == torch.float32
    torch.testing.assert_close(got[0], official(image, size, aspect), atol=1e-5, rtol=0)


def test_images_already_at_size_match_the_clip_processor_bit_for_bit():
    processor = Owl2ImageProcessor(size=56)
    images = [noise_image(56, 56, seed=s) for s in range(3)]
    got = processor(images)
    assert torch.equal(got, processor.clip(images, return_tensors="pt")["pixel_values"])
    mixed = processor(images[:1] + [noise_image(70, 70, seed=9)])  # one needs resizing: all go through CLIP
    assert torch.equal(mixed[0], got[0])


def test_pad_fills_with_clip_mean_colour():
    image = Image.new("RGB", (20, 56), (0, 0, 0))
    got = Owl2ImageProcessor(size=56, aspect="pad")([image])[0]
    pad_value = (np.array([122, 116, 104], dtype=np.float32) / 255 - MEAN) / STD  # int(mean * 255)
    torch.testing.assert_close(got[:, :, 0], torch.from_numpy(pad_value)[:, None].expand(3, 56), atol=1e-5, rtol=0)
    assert got[0, 28, 28] < -1.5  # the black image stays in the centre


def test_batch_and_empty():
    processor = Owl2ImageProcessor(size=56)
    images = [noise_image(30, 40, 0), noise_image(60, 20, 1)]
    batch = processor(images)
    assert batch.shape == (2, 3, 56, 56)
    torch.testing.assert_close(batch[1], processor([images[1]])[0])
    assert processor([]).shape == (0, 3, 56, 56)


def test_unknown_aspect_is_an_error():
    with pytest.raises(ValueError, match="aspect must be one of"):
        Owl2ImageProcessor(aspect="crop")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    base = noise_image(24, 16, 3)
    if mode == "I;16":
        wide = np.asarray(base.convert("L")).astype("<u2") * 257
        image = Image.frombytes("I;16", base.size, wide.tobytes())
        expected = base.convert("L").convert("RGB")
    elif mode in ("I", "F"):
        image = base.convert("L").convert(mode)
        expected = base.convert("L").convert("RGB")
    else:
        image = base.convert(mode)
        expected = image.convert("RGB")
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (24, 16)
    np.testing.assert_array_equal(np.asarray(rgb), np.asarray(expected))
    assert Owl2ImageProcessor(size=56)([image]).shape == (1, 3, 56, 56)


def test_palette_with_transparency_converts_without_warning(recwarn):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = b"\x00\xff"
    rgb = to_rgb(image)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)
    assert not [w for w in recwarn if "Transparency" in str(w.message)]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90-degree clockwise turn
    image.save(tmp_path / "rotated.png", exif=exif)
    with Image.open(tmp_path / "rotated.png") as loaded:
        rgb = to_rgb(loaded)
    assert rgb.size == (20, 40)
    assert rgb.getpixel((10, 5)) == (255, 0, 0)  # the red half is now on top
    assert rgb.getpixel((10, 35)) == (0, 0, 255)


def test_save_and_load(tmp_path):
    processor = Owl2ImageProcessor(size=56, aspect="resize")
    processor.save_pretrained(tmp_path)
    loaded = Owl2ImageProcessor.from_pretrained(tmp_path)
    assert (loaded.size, loaded.aspect) == (56, "resize")
    image = noise_image(31, 47, 5)
    torch.testing.assert_close(loaded([image]), processor([image]), atol=0, rtol=0)


def test_loads_official_preprocessor_config(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"crop_size": 448, "do_center_crop": true, "do_normalize": true, "do_resize": true,'
        ' "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],'
        ' "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 448}'
    )
    loaded = Owl2ImageProcessor.from_pretrained(tmp_path)
    assert (loaded.size, loaded.aspect, loaded.pad_color) == (448, "pad", (122, 116, 104))
