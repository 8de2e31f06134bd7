"""Video to `(clips x crops, 3, S, S)` against a re-statement of the release's pytorchvideo + decord pipeline
(clip sampler, frame choice, ShortSideScale, NormalizeVideo, SpatialCrop), on videos written here with PyAV."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from owl2.processing.media.config import MediaConfig
from owl2.processing.media.errors import MediaError
from owl2.processing.media.video import clip_frame_indices, load_video, transform_video
from tests.processing.media.conftest import CLIP_MEAN, CLIP_STD, decode_all_frames, frame_values, write_video

ATOL = 1e-5  # float32 bilinear interpolation and normalisation, the same formulas on both sides


def official_clip_times(duration: float, clip_duration: float = 1.0, clips: int = 5) -> list[tuple]:
    """`get_clip_timepoints` with `ConstantClipsPerVideoSampler`: call the sampler until it says "last"."""
    times, index = [], 0
    while True:
        max_start = Fraction(max(duration - clip_duration, 0))
        uniform = Fraction(max_start, clips)
        start = uniform * index
        index += 1
        times.append((start, start + Fraction(clip_duration)))
        if index >= clips or uniform * index > max_start:
            return times


def official_frame_indices(num_frames: int, fps: float, clips: int = 5) -> list[int]:
    """decord's `get_clip(start, end)` frames, then `UniformTemporalSubsample(1)`'s pick among them."""
    fps = float(fps)  # decord's get_avg_fps() is a float, so fps * start is float arithmetic
    chosen = []
    for start, end in official_clip_times(float(num_frames) / fps, clips=clips):
        frames = list(range(math.ceil(fps * start), min(math.ceil(fps * end), num_frames)))
        pick = torch.clamp(torch.linspace(0, len(frames) - 1, 1), 0, len(frames) - 1).long()
        chosen.append(frames[int(pick)])
    return chosen


def official_transform(frames: np.ndarray, size: int, crops: int) -> torch.Tensor:
    """Per clip `(C, 1, H, W)` / 255 -> ShortSideScale -> NormalizeVideo; then SpatialCrop's `uniform_crop`s;
    stacked, and `[:, :, 0]`."""
    out = []
    for frame in frames:
        clip = torch.from_numpy(frame).permute(2, 0, 1)[:, None].float() / 255.0  # (C, T=1, H, W)
        c, t, h, w = clip.shape
        new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        clip = F.interpolate(clip, size=(new_h, new_w), mode="bilinear", align_corners=False)
        mean, std = torch.tensor(CLIP_MEAN)[:, None, None, None], torch.tensor(CLIP_STD)[:, None, None, None]
        clip = (clip - mean) / std
        for spatial_idx in ([0, 1, 2] if crops == 3 else [1]):
            y, x = int(math.ceil((new_h - size) / 2)), int(math.ceil((new_w - size) / 2))
            if new_h > new_w:
                y = {0: 0, 1: y, 2: new_h - size}[spatial_idx]
            else:
                x = {0: 0, 1: x, 2: new_w - size}[spatial_idx]
            out.append(clip[:, :, y : y + size, x : x + size])
    return torch.stack(out)[:, :, 0]  # (clips * crops, C, S, S)


@pytest.mark.parametrize("num_frames, fps", [(30, 10), (300, 29.97), (1, 25), (8, 10), (10, 10), (11, 10),
                                             (241, 24), (125, 25), (7, 30000 / 1001), (1000, 60)])  # fmt: skip
def test_frame_choice_is_the_release_sampler_and_decord(num_frames, fps):
    assert clip_frame_indices(num_frames, fps) == official_frame_indices(num_frames, fps)


def test_frame_choice_by_hand():
    assert clip_frame_indices(30, 10) == [0, 4, 8, 12, 16]  # 3 s: starts every (3 - 1) / 5 = 0.4 s
    assert clip_frame_indices(8, 10) == [0, 0, 0, 0, 0]  # shorter than a clip: five clips at 0 s
    assert clip_frame_indices(30, 10, clips=1) == [0]


@pytest.mark.parametrize("width, height", [(40, 30), (30, 40), (36, 36), (42, 30)])
def test_the_release_pipeline_on_a_file(tmp_path, width, height):
    written = write_video(tmp_path / "v.mp4", frames=30, fps=10, width=width, height=height)
    frames, fps = decode_all_frames(tmp_path / "v.mp4")
    assert len(frames) == len(written) and fps == 10
    expected = official_transform(frames[official_frame_indices(len(frames), fps)], 224, 3)
    out = load_video(tmp_path / "v.mp4")
    assert out.shape == (15, 3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)


def test_frames_come_out_clip_major_from_the_chosen_frames(tmp_path):
    write_video(tmp_path / "v.mp4", frames=30, fps=10)
    out = load_video(tmp_path / "v.mp4")  # frames 0, 4, 8, 12, 16: grey levels 0, 32, 64, 96, 128
    grey = (out * torch.tensor(CLIP_STD)[:, None, None] + torch.tensor(CLIP_MEAN)[:, None, None]) * 255
    levels = grey.mean(dim=(1, 2, 3)).view(5, 3)  # (clips, crops)
    expected = torch.tensor([frame_values(30)[i] for i in (0, 4, 8, 12, 16)], dtype=torch.float32)
    torch.testing.assert_close(levels, expected[:, None].expand(5, 3), rtol=0, atol=3.0)  # YUV rounding, noise


def test_portrait_crops_run_top_to_bottom():
    frame = np.zeros((1, 60, 20, 3), np.uint8)
    frame[0, :, :, 0] = np.arange(60, dtype=np.uint8)[:, None] * 4  # red grows downwards
    crops = transform_video(frame, size=20, crops=3)  # (3, 3, 20, 20): rows 0-19, 20-39, 40-59
    red = crops[:, 0].mean(dim=(1, 2))
    assert red[0] < red[1] < red[2]


def test_toy_sizes_one_clip_three_crops(tmp_path, toy_media):
    write_video(tmp_path / "v.mkv", frames=12, fps=4, codec="ffv1")
    frames, fps = decode_all_frames(tmp_path / "v.mkv")
    out = load_video(tmp_path / "v.mkv", toy_media)
    assert out.shape == (3, 3, 28, 28)
    expected = official_transform(frames[official_frame_indices(len(frames), fps, clips=1)], 28, 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)


def test_one_centre_crop_per_clip(tmp_path):
    write_video(tmp_path / "v.mp4", frames=20, fps=10)
    config = MediaConfig(video_clips=4, video_crops=1, image_size=16)
    frames, fps = decode_all_frames(tmp_path / "v.mp4")
    expected = official_transform(frames[official_frame_indices(len(frames), fps, clips=4)], 16, 1)
    torch.testing.assert_close(load_video(tmp_path / "v.mp4", config), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".mov", "libx264"), (".webm", "libvpx-vp9")])
def test_other_containers(tmp_path, suffix, codec):
    write_video(tmp_path / f"v{suffix}", frames=12, fps=6, codec=codec)
    assert load_video(tmp_path / f"v{suffix}", MediaConfig(image_size=16)).shape == (15, 3, 16, 16)


def test_a_one_frame_video_repeats_its_frame(tmp_path):
    write_video(tmp_path / "still.mp4", frames=1, fps=25)
    out = load_video(tmp_path / "still.mp4", MediaConfig(image_size=16))
    assert out.shape == (15, 3, 16, 16)
    assert torch.equal(out[0::3], out[:1].expand(5, 3, 16, 16))  # every clip's left crop is frame 0's


# -- bad files ----------------------------------------------------------------------------------------------------
def test_zero_frames(tmp_path):
    write_video(tmp_path / "empty.avi", frames=0, codec="mpeg4")  # AVI keeps a stream without frames
    with pytest.raises(MediaError, match=r"empty.avi: zero-length video \(0 frames\); expected at least 1 frame"):
        load_video(tmp_path / "empty.avi")


def test_missing_wrong_suffix_unreadable_and_audio_only(tmp_path):
    with pytest.raises(MediaError, match=r"gone.mp4: no such file; expected an existing video file \(.mp4, .avi"):
        load_video(tmp_path / "gone.mp4")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(MediaError, match=r"clip.gif: unsupported file type '.gif' for video; expected .mp4, .avi"):
        load_video(tmp_path / "clip.gif")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(MediaError, match=r"junk.mp4: cannot open as video .*; expected a readable video file"):
        load_video(tmp_path / "junk.mp4")
    from tests.processing.media.conftest import write_audio_av

    write_audio_av(tmp_path / "sound.webm", np.zeros(48000), 48000, "libopus")
    with pytest.raises(MediaError, match=r"sound.webm: no video stream; expected a file with video"):
        load_video(tmp_path / "sound.webm")
