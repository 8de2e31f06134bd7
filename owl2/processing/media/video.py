"""Video to `(clips x crops, 3, S, S)`: official `data/video_utils.py`, `load_and_transform_video_data(...,
clip_duration=1, clips_per_video=5)`, then `[:, :, 0]` as `data/fintune_dataset.py` (`load_video`) takes it.

The release's steps, with the pytorchvideo pieces that do them:
1. `ConstantClipsPerVideoSampler(clip_duration=1, clips_per_video=5)`: with D = frames / fps seconds, clip k
   (k = 0..4) starts at k * max(D - 1, 0) / 5 s, a step of a fifth (not a quarter), so the last clip starts
   a fifth short of the latest start; a video shorter than a clip gives five clips at 0 s.
2. decord's `get_clip(start, start + 1)` reads frames ceil(fps * start) up to ceil(fps * (start + 1)), and
   `UniformTemporalSubsample(1)` keeps the first of them: frame ceil(fps * start), in float arithmetic.
3. `/ 255`, `ShortSideScale(224)`: bilinear, no antialiasing, short side to 224, long side
   floor(long / short * 224).
4. `NormalizeVideo` with CLIP's mean and std.
5. `SpatialCrop(224, num_crops=3)`: three squares along the long side, at 0, ceil((L - 224) / 2) and
   L - 224 (left, centre, right; top, centre, bottom when taller than wide; a square frame gives three
   equal crops), the short side centred at ceil((l - 224) / 2).
Frames come out clip-major: clip 0's three crops, then clip 1's, ...

Differences: decoding is PyAV's, not decord's (the same FFmpeg; see `decode.py`); at frame rates below
1 fps a clip can start past the last frame, where the release fails and owl2 takes the last frame.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from owl2.processing.image import normalize
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.decode import read_video_frames
from owl2.processing.media.errors import check_file


def clip_frame_indices(num_frames: int, fps: float, clips: int = 5, clip_duration: float = 1.0) -> list[int]:
    """The frame kept from each of `clips` clips spread over the video (steps 1 and 2 above).

    Args:
        num_frames: Frames in the video (at least 1).
        fps: Its average frame rate.
        clips: Clips per video.
        clip_duration: Seconds per clip.

    Returns:
        One frame index per clip, in time order (repeats when the video is short).
    """
    duration = num_frames / fps
    latest_start = Fraction(max(duration - clip_duration, 0))  # exact, as the sampler computes it
    step = latest_start / clips
    return [min(math.ceil(fps * float(step * k)), num_frames - 1) for k in range(clips)]


def transform_video(frames: np.ndarray | torch.Tensor, size: int = 224, crops: int = 3) -> torch.Tensor:
    """One frame per clip to CLIP inputs (steps 3 to 5 above).

    Args:
        frames: `(clips, H, W, 3)` uint8 RGB, as decoded.
        size: Short side after scaling, and the crops' side.
        crops: Spatial crops per clip, 3 or 1 (the centre).

    Returns:
        `(clips * crops, 3, size, size)` float32, clip-major.
    """
    pixels = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    height, width = pixels.shape[-2:]
    if width < height:
        scaled = (math.floor(height / width * size), size)
    else:
        scaled = (size, math.floor(width / height * size))
    pixels = F.interpolate(pixels, size=scaled, mode="bilinear", align_corners=False)
    return spatial_crops(normalize(pixels), size, crops)


def spatial_crops(frames: torch.Tensor, size: int, crops: int = 3) -> torch.Tensor:
    """`(T, 3, H, W)` -> `(T * crops, 3, size, size)`: pytorchvideo's `SpatialCrop` (step 5 above), clip-major."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3 (the official SpatialCrop), got {crops}")
    height, width = frames.shape[-2:]
    top, left = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if crops == 1:
        corners = [(top, left)]
    elif height > width:
        corners = [(0, left), (top, left), (height - size, left)]
    else:
        corners = [(top, 0), (top, left), (top, width - size)]
    views = [frames[:, :, y : y + size, x : x + size] for y, x in corners]  # crops x (T, 3, S, S)
    return torch.stack(views, dim=1).flatten(0, 1)  # (T, crops, 3, S, S) -> (T * crops, 3, S, S)


def load_video(path: str | Path, config: MediaConfig = MediaConfig()) -> torch.Tensor:
    """A video file as `(video_clips * video_crops, 3, image_size, image_size)` float32.

    Raises:
        MediaError: If the file is missing, not a video suffix, unreadable, or has no frames.
    """
    path = check_file(path, "video", MEDIA_SUFFIXES["video"])
    choose = partial(clip_frame_indices, clips=config.video_clips, clip_duration=config.video_clip_duration)
    frames = read_video_frames(path, choose)  # (clips, H, W, 3)
    return transform_video(frames, config.image_size, config.video_crops)
