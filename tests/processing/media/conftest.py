"""Synthetic media files written in `tmp_path`, the toy media config, and CLIP's constants, for the media tests.

The writers use PyAV and the standard library only (not the code under test).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from owl2.config import OneLLMConfig
from owl2.processing.media.config import MediaConfig
from tests.models.onellm.conftest import TOY_PRESET

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the release's literal values (data_utils.py)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="session")
def toy_media() -> MediaConfig:
    """The media config of the toy OneLLM preset (28 px, 24 mel x 34 frames, 20 IMU samples, 50 voxels, 1 x 3 video)."""
    return MediaConfig.from_model_config(OneLLMConfig.from_json_file(TOY_PRESET))


def frame_values(count: int, step: int = 8) -> list[int]:
    """A grey level per frame, distinct and far apart, so that a decoded frame tells its index."""
    return [(i * step) % 256 for i in range(count)]


def write_video(
    path: Path, frames: int, fps: int = 10, width: int = 40, height: int = 30, codec: str = "libx264", seed: int = 0
) -> np.ndarray:
    """A video whose frame i is grey level `frame_values()[i]` plus mild noise; returns the frames written."""
    import av

    rng = np.random.default_rng(seed)
    written = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0"}  # lossless: the decoded frames are what was written (up to YUV)
        for value in frame_values(frames):
            pixels = np.clip(value + rng.integers(-3, 4, (height, width, 3)), 0, 255).astype(np.uint8)
            written.append(pixels)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        if not written:
            container.start_encoding()  # the header alone: a video stream without frames
        for packet in stream.encode():
            container.mux(packet)
    return np.stack(written) if written else np.zeros((0, height, width, 3), np.uint8)


def decode_all_frames(path: Path) -> tuple[np.ndarray, float]:
    """Every frame of `path` as RGB `(T, H, W, 3)`, and its average rate: the test's own decoding loop."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate)


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    """PCM WAV of float samples `(T,)` or `(T, channels)` in [-1, 1], as `width`-byte integers."""
    samples = samples[:, None] if samples.ndim == 1 else samples
    scale = 2 ** (8 * width - 1)
    ints = np.clip(np.round(samples * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.reshape(-1))
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[1])
        file.setsampwidth(width)
        file.setframerate(rate)
        file.writeframes(raw)


def write_audio_av(path: Path, samples: np.ndarray, rate: int, codec: str) -> None:
    """Audio `(T,)` float in [-1, 1] encoded by PyAV with `codec` (mono): flac, pcm_f32le, libmp3lame, ..."""
    import av

    formats = {"flac": "s16", "pcm_f32le": "flt", "libmp3lame": "fltp", "libopus": "flt"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        data = samples.astype(np.float32)[None]
        if formats[codec] == "s16":
            data = np.round(samples * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(data, format=formats[codec], layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
