"""`OneLLMMediaProcessor`: files of OneLLM's eight modalities to the tensors `OneLLMModel` takes.

One call per modality gives the batch for `modality_inputs`, one item per placeholder in order:

    image        (N, 3, S, S)                 audio   (N, 1, mel bins, frames)
    video        (N, clips x crops, 3, S, S)  point   (N, points, 6)
    rgbd, rgbn   (N, 2, 3, S, S)              imu     (N, 6, samples)
                                              fmri    (N, 1, voxels)

Each modality's loader is its own module here; this class only dispatches and stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from owl2.processing.media.audio import load_audio
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError
from owl2.processing.media.fmri import load_fmri
from owl2.processing.media.image import load_image
from owl2.processing.media.imu import load_imu
from owl2.processing.media.point import load_point
from owl2.processing.media.rgbx import load_rgbx
from owl2.processing.media.video import load_video

if TYPE_CHECKING:
    from owl2.config import OneLLMConfig

MediaItem = str | Path | Image.Image | tuple | list | torch.Tensor
"""One input: a path; for "image" also a PIL image; for "rgbd"/"rgbn" an `(image, map)` pair (paths or PIL
images); for "imu" also `(path, start_s, end_s)`, a window in seconds. Pairs and windows may be lists (JSON).
A tensor is an input already loaded (by `load`), taken as it is once its shape is checked."""

_LOADERS = {"image": load_image, "video": load_video, "audio": load_audio, "point": load_point,
            "fmri": load_fmri, "imu": load_imu}  # fmt: skip
"""Modalities whose items are one path (or image), with their loaders `(item, config) -> tensor`."""


class OneLLMMediaProcessor:
    """Media files to OneLLM's model inputs, by the release's preprocessing.

    Example:
        >>> processor = OneLLMMediaProcessor.from_model_config(model.config)
        >>> audio = processor("audio", ["dog.wav", "rain.flac"])  # (2, 1, 128, 1024)
        >>> rgbd = processor("rgbd", [("room.jpg", "room_depth.png")])  # (1, 2, 3, 224, 224)
        >>> model(input_ids, modality_inputs={"audio": audio, "rgbd": rgbd})
    """

    suffixes = MEDIA_SUFFIXES
    """Modality -> the file suffixes its loader accepts."""

    def __init__(self, config: MediaConfig | None = None):
        """Build the processor.

        Args:
            config: Sizes and constants; the release's (`MediaConfig()`) by default.
        """
        self.config = config or MediaConfig()

    @classmethod
    def from_model_config(cls, model_config: OneLLMConfig, **overrides) -> OneLLMMediaProcessor:
        """The processor for a `OneLLMConfig` (see `MediaConfig.from_model_config`)."""
        return cls(MediaConfig.from_model_config(model_config, **overrides))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OneLLMMediaProcessor:
        """Load from a folder with `media_config.json`."""
        return cls(MediaConfig.from_pretrained(directory))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `media_config.json` into `directory`; returns the file."""
        return self.config.save_pretrained(directory)

    def load(self, modality: str, item: MediaItem) -> torch.Tensor:
        """One input of `modality` as a tensor without the batch axis (`config.input_shape(modality)`).

        Raises:
            ValueError: If `modality` is unknown, or `item` is not of the form the modality takes.
            MediaError: If a file is bad (naming it, and what was expected).
        """
        if isinstance(item, torch.Tensor):
            return self._check_loaded(modality, item)
        if modality in ("rgbd", "rgbn"):
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise ValueError(f"a {modality} input is an (image, map) pair, got {item!r}")
            return load_rgbx(item[0], item[1], self.config, modality)
        if modality == "imu" and isinstance(item, (tuple, list)):  # a list as JSON gives it
            if len(item) != 3:
                raise ValueError(f"an imu input with a window is (path, start_s, end_s), got {item!r}")
            path, start, end = item
            return load_imu(path, self.config, window=(float(start), float(end)))
        if modality not in _LOADERS:
            raise ValueError(f"unknown modality {modality!r}; expected one of {tuple(MEDIA_SUFFIXES)}")
        if isinstance(item, Image.Image) and modality != "image":
            raise ValueError(f"a PIL image is an input for image, rgbd or rgbn, not {modality}")
        return _LOADERS[modality](item, self.config)

    def _check_loaded(self, modality: str, item: torch.Tensor) -> torch.Tensor:
        """`item` if it has the shape `load` gives (for points, any number of points)."""
        expected = self.config.input_shape(modality)
        sizes_match = all(want == got or want == 0 for got, want in zip(item.shape, expected))  # 0: any
        matches = item.dim() == len(expected) and sizes_match
        if not matches:
            raise ValueError(f"a loaded {modality} input has shape {tuple(item.shape)}; expected {expected}")
        return item

    def __call__(self, modality: str, items: Sequence[MediaItem] | str | Path | Image.Image) -> torch.Tensor:
        """A batch of inputs of `modality`: `(N, *config.input_shape(modality))` float32.

        Args:
            modality: One of OneLLM's modalities.
            items: The inputs (see `MediaItem`), or a single path or image.

        Raises:
            MediaError: If a file is bad, or point clouds of different sizes are batched without
                `point_num_points`.
        """
        if isinstance(items, (str, Path, Image.Image)):
            items = [items]
        tensors = [self.load(modality, item) for item in items]
        if not tensors:
            return torch.zeros(0, *self.config.input_shape(modality))
        shapes = {tuple(tensor.shape) for tensor in tensors}
        if len(shapes) > 1:  # only point clouds vary
            names = [item if isinstance(item, (str, Path)) else f"input {i}" for i, item in enumerate(items)]
            sizes = ", ".join(f"{name}: {tensor.shape[0]}" for name, tensor in zip(names, tensors))
            raise MediaError(
                f"point clouds of different sizes cannot be batched ({sizes}); expected one size, or set "
                "MediaConfig.point_num_points to resample them"
            )
        return torch.stack(tensors)
