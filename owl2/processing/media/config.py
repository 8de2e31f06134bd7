"""`MediaConfig`: every number OneLLM's loaders use, as data, and the file types each modality accepts.

Defaults are the release's (official `data/data_utils.py`, `data/video_utils.py`, `data/imu_utils.py` and
the loaders of `data/fintune_dataset.py`); `MediaConfig.from_model_config` derives the sizes a given
`OneLLMConfig` (the toy one, say) expects. Saved next to a model as `media_config.json`.

Light on purpose (no torch at import), so that a command line can list `MEDIA_SUFFIXES` cheaply.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from owl2.config import OneLLMConfig

CONFIG_NAME = "media_config.json"
"""File written by `MediaConfig.save_pretrained`."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

MEDIA_SUFFIXES = MappingProxyType({
    "image": IMAGE_SUFFIXES,
    "video": (".mp4", ".avi", ".mov", ".mkv", ".webm"),
    "audio": (".wav", ".flac", ".mp3", ".ogg"),
    "point": (".npy",),
    "rgbd": IMAGE_SUFFIXES,  # both files of the pair: the RGB image and its depth map
    "rgbn": IMAGE_SUFFIXES,  # both files of the pair: the RGB image and its normal map
    "fmri": (".npy",),
    "imu": (".npy", ".csv"),
})
"""Modality -> the file suffixes its loader accepts (lower case), for a command line to show."""

CROPS = (1, 3)
"""Spatial crops per video clip the official `SpatialCrop` supports: the centre, or left/centre/right."""


@dataclasses.dataclass(frozen=True)
class MediaConfig:
    """The sizes and constants of OneLLM's preprocessing, one field per number (release values by default)."""

    image_size: int = 224
    """Side of every frame CLIP sees: short-side resize then centre crop (images, video frames, rgbd/rgbn)."""
    video_clips: int = 5
    """Clips spread evenly over a video (pytorchvideo's `ConstantClipsPerVideoSampler`), one frame each."""
    video_crops: int = 3
    """Spatial crops per clip: 3 (left/centre/right, or top/centre/bottom for portrait) or 1 (centre)."""
    video_clip_duration: float = 1.0
    """Length of each clip in seconds; only its first frame is kept (`UniformTemporalSubsample(1)`)."""
    audio_sample_rate: int = 16000
    """Rate audio is resampled to before the filterbank."""
    audio_num_mel_bins: int = 128
    """Mel bins of the Kaldi filterbank: the spectrogram's height."""
    audio_num_frames: int = 1024
    """Filterbank frames (10 ms apart) kept or zero-padded to: the spectrogram's width (10.24 s)."""
    audio_mean: float = -4.2677393
    """Mean of the log-mel values the release normalises with, as `(x - mean) / (2 * std)`."""
    audio_std: float = 4.5689974
    """Standard deviation of the log-mel values the release normalises with."""
    audio_downmix: Literal["first", "mean"] = "first"
    """How several channels become one: "first" keeps channel 0, as the release does (Kaldi's `fbank` reads
    channel 0 of what it is given), "mean" averages the channels."""
    imu_rate: int = 200
    """Rate IMU signals are resampled to, in Hz; also the rate assumed for a `.npy` without timestamps."""
    imu_num_samples: int = 400
    """Samples per IMU window, zero-padded or cut to (2 s at 200 Hz)."""
    imu_num_channels: int = 6
    """IMU channels: accelerometer x, y, z then gyroscope x, y, z."""
    fmri_num_voxels: int = 15724
    """Voxels per fMRI scan (NSD subject 1, `nsdgeneral` mask)."""
    point_num_features: int = 6
    """Features per point: x, y, z then r, g, b."""
    point_num_points: int | None = None
    """Points every cloud is resampled to (evenly spaced indices), or None to keep each file's (the release's
    clouds have 8192); clouds batched together must then have the same size."""
    point_min_points: int = 1024
    """Fewest points a cloud may have: the point tokenizer picks `point_num_groups` centres and groups
    `point_group_size` neighbours."""

    def __post_init__(self):
        positive = ("image_size", "video_clips", "audio_sample_rate", "audio_num_mel_bins", "audio_num_frames",
                    "imu_rate", "imu_num_samples", "imu_num_channels", "fmri_num_voxels", "point_num_features",
                    "point_min_points")  # fmt: skip
        bad = {name: getattr(self, name) for name in positive if not _positive_int(getattr(self, name))}
        if self.point_num_points is not None and not _positive_int(self.point_num_points):
            bad["point_num_points"] = self.point_num_points
        if bad:
            raise ValueError(f"MediaConfig fields must be positive integers, got {bad}")
        if self.video_crops not in CROPS:
            raise ValueError(f"MediaConfig.video_crops must be one of {CROPS}, got {self.video_crops!r}")
        if not self.video_clip_duration > 0 or not self.audio_std > 0:
            raise ValueError(
                f"MediaConfig.video_clip_duration and audio_std must be positive, got "
                f"{self.video_clip_duration!r} and {self.audio_std!r}"
            )
        if self.audio_downmix not in ("first", "mean"):
            raise ValueError(f'MediaConfig.audio_downmix must be "first" or "mean", got {self.audio_downmix!r}')

    @property
    def video_num_frames(self) -> int:
        """Frames per video input: clips x crops, clip-major (the model's `video_num_frames`)."""
        return self.video_clips * self.video_crops

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """Shape of one processed input of `modality` (without the batch axis); points: 0 if not fixed."""
        side = self.image_size
        shapes = {
            "image": (3, side, side),
            "video": (self.video_num_frames, 3, side, side),
            "rgbd": (2, 3, side, side),
            "rgbn": (2, 3, side, side),
            "audio": (1, self.audio_num_mel_bins, self.audio_num_frames),
            "point": (self.point_num_points or 0, self.point_num_features),
            "imu": (self.imu_num_channels, self.imu_num_samples),
            "fmri": (1, self.fmri_num_voxels),
        }
        if modality not in shapes:
            raise ValueError(f"unknown modality {modality!r}; expected one of {tuple(shapes)}")
        return shapes[modality]

    @classmethod
    def from_model_config(cls, config: OneLLMConfig, **overrides) -> MediaConfig:
        """The sizes `config`'s tokenizers and CLIP expect; rates and constants stay the release's.

        Video frames are split into clips x crops by one rule: three spatial crops when the frame count is a
        multiple of 3 (the release's 15 = 5 clips x 3 crops; the toy's 3 = 1 clip x 3 crops), else one centre
        crop per clip (e.g. 4 = 4 clips x 1 crop).

        Args:
            config: The model's config.
            overrides: Fields to set otherwise (e.g. `audio_downmix="mean"`).

        Raises:
            ValueError: If `config` wants rgbd/rgbn inputs of other than 2 frames (an image and its map).
        """
        tokenizer = config.tokenizer_config
        if tokenizer.rgbx_num_frames != 2:
            raise ValueError(
                f"tokenizer_config.rgbx_num_frames is {tokenizer.rgbx_num_frames}; the rgbd/rgbn loaders give 2 "
                "frames (the RGB image, then its depth or normal map)"
            )
        frames = tokenizer.video_num_frames
        crops = 3 if frames % 3 == 0 else 1
        derived = dict(
            image_size=config.vision_config.image_size,
            video_clips=frames // crops,
            video_crops=crops,
            audio_num_mel_bins=tokenizer.audio_num_mel_bins,
            audio_num_frames=tokenizer.audio_num_frames,
            imu_num_samples=tokenizer.imu_num_samples,
            imu_num_channels=tokenizer.imu_num_channels,
            fmri_num_voxels=tokenizer.fmri_num_voxels,
            point_num_features=tokenizer.point_num_features,
            point_min_points=max(tokenizer.point_num_groups, tokenizer.point_group_size),
        )
        return cls(**{**derived, **overrides})

    def to_dict(self) -> dict:
        """Every field, by name."""
        return dataclasses.asdict(self)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `media_config.json` (every field) into `directory`, creating it; returns the file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MediaConfig:
        """Read `media_config.json` from `directory`; fields it leaves out keep their defaults.

        Raises:
            FileNotFoundError: If the folder has no `media_config.json`.
            ValueError: Naming the file, if it is not a JSON object, has keys `MediaConfig` does not know,
                or holds invalid values.
        """
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} in {directory}")
        try:
            fields = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: expected a JSON object of MediaConfig fields, got {type(fields).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"{path}: unknown MediaConfig keys {unknown}; expected keys from {sorted(known)}")
        try:
            return cls(**fields)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
