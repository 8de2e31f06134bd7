"""Decoding with PyAV (FFmpeg): video frames and audio samples. The one module that imports `av`.

The release decodes video with decord (pytorchvideo's `EncodedVideoDecord`) and audio with torchaudio, both
FFmpeg underneath. Like decord, a video's length is its stream's frame count (counted from its packets when
the container does not say) and its rate the stream's average frame rate; frames are converted to RGB by
FFmpeg's swscale. Audio comes out as float in [-1, 1], FFmpeg's own conversion (int16 / 32768, ...), as
torchaudio loads it. PyAV is the `media` extra: `pip install 'owl2[media]'`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from owl2.processing.media.errors import MediaError

INSTALL_HINT = "PyAV is needed to decode video and compressed audio: pip install 'owl2[media]' (or pip install av)"


def read_video_frames(path: Path, choose: Callable[[int, float], Sequence[int]]) -> np.ndarray:
    """Decode the frames `choose` picks from the first video stream of `path`.

    Args:
        path: The video file.
        choose: `(frame count, frames per second) -> frame indices` (any order, repeats allowed).

    Returns:
        `(len(indices), H, W, 3)` uint8 RGB, in the order `choose` gave. An index past the last frame that
        decodes (a container that overstates its length) gets that last frame, as its nearest.

    Raises:
        MediaError: If the file does not open, has no video stream, no frame rate, or no frames.
    """
    with _open(path, "video") as container:
        stream = _first_stream(container, path, "video")
        rate = stream.average_rate or stream.guessed_rate
        if not rate or rate <= 0:
            raise MediaError(f"{path}: the video stream has no frame rate; expected a video with a known rate")
        count = stream.frames or _count_packets(path)
        if count <= 0:
            raise MediaError(f"{path}: zero-length video (0 frames); expected at least 1 frame")
        indices = [int(i) for i in choose(count, float(rate))]
        wanted, last_wanted = set(indices), max(indices)
        frames: dict[int, np.ndarray] = {}
        last = None
        stream.thread_type = "AUTO"
        for index, frame in enumerate(_decoded(container, stream, path, "video")):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            last = index, frame
            if index >= last_wanted:
                break
    if last is None:
        raise MediaError(f"{path}: no video frame decodes (the stream claims {count}); expected at least 1 frame")
    last_index, last_frame = last
    if last_index not in frames:
        frames[last_index] = last_frame.to_ndarray(format="rgb24")
    return np.stack([frames[min(i, last_index)] for i in indices])  # (K, H, W, 3)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` to float32 samples.

    Returns:
        `(samples (channels, T) float32 in [-1, 1], sample rate in Hz)`.

    Raises:
        MediaError: If the file does not open or has no audio stream.
    """
    import av

    with _open(path, "audio") as container:
        stream = _first_stream(container, path, "audio")
        to_float = av.AudioResampler(format="fltp")  # float planar; the layout and the rate are kept
        chunks = []
        for frame in _decoded(container, stream, path, "audio"):
            chunks += [out.to_ndarray() for out in to_float.resample(frame)]
        chunks += [out.to_ndarray() for out in to_float.resample(None)]  # flush
        rate = stream.rate or stream.codec_context.sample_rate
        channels = stream.codec_context.channels
    if not chunks:
        return np.zeros((max(channels, 1), 0), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate  # (C, T)


def _open(path: Path, kind: str):
    try:
        import av
    except ImportError as error:
        raise ImportError(f"{path}: {INSTALL_HINT}") from error
    try:
        return av.open(str(path))
    except av.FFmpegError as error:
        raise MediaError(f"{path}: cannot open as {kind} ({error}); expected a readable {kind} file") from None


def _first_stream(container, path: Path, kind: str):
    streams = getattr(container.streams, kind)
    if not streams:
        raise MediaError(f"{path}: no {kind} stream; expected a file with {kind}")
    return streams[0]


def _decoded(container, stream, path: Path, kind: str):
    """The stream's frames, with FFmpeg's decoding errors as `MediaError`."""
    import av

    try:
        yield from container.decode(stream)
    except av.FFmpegError as error:
        raise MediaError(f"{path}: cannot decode {kind} ({error}); expected a readable {kind} file") from None


def _count_packets(path: Path) -> int:
    """Frames of the first video stream by counting its packets (for containers without a frame count)."""
    with _open(path, "video") as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
