"""Image preprocessing (official `mm_utils.py` `expand2square` and `process_images`).

The official pipeline opens an image, converts it to RGB, makes it square (`pad`: paste it centred
on a square of the CLIP mean colour; `resize`: stretch it to a square of its longest edge), then
runs the CLIP image processor (bicubic resize of the shortest edge, centre crop, rescale,
normalise with the CLIP mean and std). The CLIP part is transformers' PIL-backed
`CLIPImageProcessorPil`, the same arithmetic as the slow processor the official code used.

Beyond the official code: EXIF orientation is applied, and every Pillow mode becomes RGB
(16-bit and float greyscale are scaled to 8 bits first, which `Image.convert` cannot do).

`to_rgb` and `normalize` are shared with OneLLM's loaders (`owl2.processing.media`), whose official
transforms are torchvision's rather than transformers'.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip import CLIPImageProcessorPil

ASPECTS = ("pad", "resize")
"""How a non-square image is made square."""
CONFIG_NAME = "preprocessor_config.json"
"""File written by `save_pretrained` (CLIP's keys plus `image_aspect_ratio`)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any Pillow mode to 8-bit RGB.

    Alpha is dropped, not composited, as the official `Image.convert("RGB")` does.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or array.max(initial=0) > 255:
            array = array / 257.0  # 65535 -> 255
        elif image.mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns on a direct P -> RGB with transparency
    return image.convert("RGB")


def normalize(
    pixels: torch.Tensor,
    mean: Sequence[float] = tuple(OPENAI_CLIP_MEAN),
    std: Sequence[float] = tuple(OPENAI_CLIP_STD),
) -> torch.Tensor:
    """CLIP's normalisation `(pixels - mean) / std` per channel, in float32.

    Args:
        pixels: Float pixels in [0, 1], `(..., 3, H, W)`: one image, a batch or frames.
        mean: Per-channel mean (CLIP's by default).
        std: Per-channel standard deviation (CLIP's by default).
    """
    mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels.float() - mean) / std


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Paste `image` centred on a square of colour `fill` (official `expand2square`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


class Owl2ImageProcessor:
    """PIL images to the `(N, 3, size, size)` float tensor the vision encoder takes.

    Example:
        >>> processor = Owl2ImageProcessor(size=448, aspect="pad")
        >>> pixel_values = processor([Image.open("cat.jpg")])  # (1, 3, 448, 448)
    """

    def __init__(
        self,
        size: int = 448,
        aspect: str = "pad",
        image_mean: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN),
        image_std: tuple[float, float, float] = tuple(OPENAI_CLIP_STD),
    ):
        """Build the processor.

        Args:
            size: Output side in pixels (the vision config's `image_size`).
            aspect: `"pad"` (centre on a mean-colour square) or `"resize"` (stretch to a square).
            image_mean: Per-channel mean for normalisation (also the pad colour).
            image_std: Per-channel standard deviation for normalisation.
        """
        if aspect not in ASPECTS:
            raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
        self.size = size
        self.aspect = aspect
        self.clip = CLIPImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=list(image_mean),
            image_std=list(image_std),
        )

    @property
    def pad_color(self) -> tuple[int, int, int]:
        """The pad colour: the mean in 0-255, truncated as the official code does."""
        return tuple(int(m * 255) for m in self.clip.image_mean)

    def square(self, image: Image.Image) -> Image.Image:
        """Convert to RGB and make square with this processor's aspect policy."""
        image = to_rgb(image)
        if self.aspect == "pad":
            return expand_to_square(image, self.pad_color)
        side = max(image.size)
        return image.resize((side, side), Image.Resampling.BICUBIC)

    def __call__(self, images: list[Image.Image] | Image.Image) -> torch.Tensor:
        """Preprocess images.

        Args:
            images: One PIL image or a list of them (any mode).

        Returns:
            Float tensor `(N, 3, size, size)`; `(0, 3, size, size)` for an empty list.
        """
        if isinstance(images, Image.Image):
            images = [images]
        if not images:
            return torch.zeros(0, 3, self.size, self.size)
        squares = [self.square(image) for image in images]
        if all(square.size == (self.size, self.size) for square in squares):
            return torch.stack([self._rescale_normalize(square) for square in squares])
        return self.clip(squares, return_tensors="pt")["pixel_values"]

    def _rescale_normalize(self, image: Image.Image) -> torch.Tensor:
        """`(3, size, size)` tensor of an RGB image already at the output size, where resize and crop are
        no-ops: the CLIP processor's arithmetic bit for bit (rescale in float64, rounded to float32, then
        normalise in float32) at a third of its cost, which shows in the data loader on small images."""
        pixels = (np.asarray(image).astype(np.float64) * self.clip.rescale_factor).astype(np.float32)  # (H, W, 3)
        return normalize(torch.from_numpy(pixels).permute(2, 0, 1), self.clip.image_mean, self.clip.image_std)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `preprocessor_config.json` (CLIP's keys plus `image_aspect_ratio`) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "image_processor_type": "Owl2ImageProcessor",
            "image_aspect_ratio": self.aspect,
            "size": {"shortest_edge": self.size},
            "crop_size": {"height": self.size, "width": self.size},
            "image_mean": list(self.clip.image_mean),
            "image_std": list(self.clip.image_std),
            "resample": 3,
            "do_convert_rgb": True,
            "do_resize": True,
            "do_center_crop": True,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
        }
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path, aspect: str | None = None) -> "Owl2ImageProcessor":
        """Load from a folder with `preprocessor_config.json` (ours, or an official CLIP one).

        Args:
            directory: The folder.
            aspect: Overrides the file's `image_aspect_ratio` (official files have none; default "pad").

        Raises:
            FileNotFoundError: If the folder has no `preprocessor_config.json`.
            ValueError: If the CLIP settings differ from what this processor implements.
        """
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} in {directory}")
        config = json.loads(path.read_text())
        size = config.get("crop_size", config.get("size"))
        if isinstance(size, dict):
            size = size.get("height", size.get("shortest_edge"))
        if not isinstance(size, int):
            raise ValueError(f"{path}: expected an integer crop_size or size, got {config.get('crop_size')!r}")
        shortest = config.get("size", size)
        shortest = shortest.get("shortest_edge", shortest.get("height")) if isinstance(shortest, dict) else shortest
        if shortest != size:
            raise ValueError(f"{path}: size ({shortest}) must equal crop_size ({size}) for square inputs")
        if config.get("resample", 3) != 3:
            raise ValueError(f"{path}: resample must be 3 (bicubic), got {config['resample']}")
        return cls(
            size=size,
            aspect=aspect or config.get("image_aspect_ratio", "pad"),
            image_mean=tuple(config.get("image_mean", OPENAI_CLIP_MEAN)),
            image_std=tuple(config.get("image_std", OPENAI_CLIP_STD)),
        )
