"""Images to `(3, S, S)`: OneLLM's evaluation transform (official `eval/image_cap_cococap.py`,
`T_resized_center_crop`): torchvision's `Resize(224, bicubic)` of the short side, `CenterCrop(224)`,
`ToTensor`, `Normalize` with CLIP's mean and std.

Not mPLUG-Owl2's `Owl2ImageProcessor`, though close: transformers' centre crop floors the offset where
torchvision rounds it (half to even), one pixel apart for some sizes. The RGB conversion and the
normalisation are `owl2.processing.image`'s (`to_rgb`, which also applies EXIF orientation, which the
release's `Image.convert("RGB")` does not; `normalize`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from owl2.processing.image import normalize, to_rgb
from owl2.processing.image_file import load_image as load_image_file
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError, check_file


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the short side to `size` (the long side truncated), then the centre `size` square."""
    image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
    return TF.center_crop(image, size)


def to_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB image at its final size to normalised `(3, H, W)` float32 (`ToTensor` then CLIP's `Normalize`)."""
    return normalize(TF.to_tensor(image))


def transform_image(image: Image.Image, size: int = 224) -> torch.Tensor:
    """Any PIL image to `(3, size, size)` float32, by the evaluation transform."""
    return to_pixels(resize_center_crop(to_rgb(image), size))


def open_image(path: str | Path, modality: str = "image") -> Image.Image:
    """Open an image file fully (so a truncated file fails here), with Pillow's decompression-bomb limit.

    Raises:
        MediaError: If the file is missing, not an image suffix, empty, or Pillow cannot read it.
    """
    path = check_file(path, modality, MEDIA_SUFFIXES[modality])
    try:
        return load_image_file(path)
    except ValueError as error:  # it names the file: "image '.../x.png' is corrupt or truncated (...)"
        raise MediaError(f"{error}; expected an image file") from None


def load_image(image: str | Path | Image.Image, config: MediaConfig = MediaConfig()) -> torch.Tensor:
    """An image file (or an already opened PIL image) as `(3, image_size, image_size)` float32."""
    if not isinstance(image, Image.Image):
        image = open_image(image)
    return transform_image(image, config.image_size)
