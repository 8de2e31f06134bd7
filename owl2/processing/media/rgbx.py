"""An RGB image and its depth or normal map to `(2, 3, S, S)`: official `data/fintune_dataset.py` and
`data/pretrain_dataset.py`, `load_rgbx`, with `transform_pairimg_train` (`data/data_utils.py`).

The release opens both files as RGB, resizes the map to the image's size (Pillow's bicubic default), crops
both with ONE `RandomResizedCrop(224, scale=(0.9, 1), ratio=(0.75, 1.3333), bicubic)` box, and normalises
both with CLIP's mean and std: the map is treated as an image. Its maps are DPT's 3-channel renderings; a
1-channel depth map is replicated to 3 channels here (16-bit depth scaled to 8 bits first, see `to_rgb`,
where the release's `convert("RGB")` would clip it at 255).

The release has no evaluation transform for these ("TODO"); owl2's default (`seed=None`) is the image
evaluation transform applied to both (short-side resize + centre crop: the same box, as the sizes match).
Given a seed, the training crop is drawn as torchvision draws it, from that seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from owl2.processing.image import to_rgb
from owl2.processing.media.config import MediaConfig
from owl2.processing.media.image import open_image, resize_center_crop, to_pixels

TRAIN_SCALE = (0.9, 1.0)
"""Area range of the training crop, as a fraction of the image (the release's)."""
TRAIN_RATIO = (0.75, 1.3333)
"""Aspect-ratio range of the training crop (the release's)."""


def transform_rgbx(
    image: Image.Image, image_map: Image.Image, size: int = 224, seed: int | None = None
) -> torch.Tensor:
    """An image and its map to `(2, 3, size, size)` float32: the image, then the map.

    Args:
        image: The RGB image (any mode).
        image_map: Its depth or normal map (any mode; resized to the image's size).
        size: Output side.
        seed: None for the evaluation crop; an integer for the release's random training crop, drawn from it.
    """
    image, image_map = to_rgb(image), to_rgb(image_map)
    image_map = image_map.resize(image.size, Image.Resampling.BICUBIC)
    if seed is None:
        pair = [resize_center_crop(picture, size) for picture in (image, image_map)]
    else:
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global generator
            torch.manual_seed(seed)
            top, left, height, width = RandomResizedCrop.get_params(image, list(TRAIN_SCALE), list(TRAIN_RATIO))
        pair = [
            TF.resized_crop(picture, top, left, height, width, [size, size], InterpolationMode.BICUBIC)
            for picture in (image, image_map)
        ]
    return torch.stack([to_pixels(picture) for picture in pair])  # (2, 3, S, S)


def load_rgbx(
    image_path: str | Path | Image.Image,
    map_path: str | Path | Image.Image,
    config: MediaConfig = MediaConfig(),
    modality: str = "rgbd",
    seed: int | None = None,
) -> torch.Tensor:
    """An image file and its map file (or opened PIL images) as `(2, 3, image_size, image_size)` float32.

    Args:
        image_path: The RGB image.
        map_path: Its depth map (rgbd) or normal map (rgbn).
        config: The sizes.
        modality: "rgbd" or "rgbn", for error messages.
        seed: See `transform_rgbx`.
    """
    pictures = [p if isinstance(p, Image.Image) else open_image(p, modality) for p in (image_path, map_path)]
    return transform_rgbx(*pictures, size=config.image_size, seed=seed)
