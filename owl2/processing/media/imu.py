"""IMU signals to `(6, samples)`: official `data/imu_utils.py`, `get_imu_frames(path, uid, start, end)`.

The release reads Ego4D's IMU as imu2clip preprocessed it, `{uid}.npy` `(6, T)` and `{uid}_timestamps.npy`
(milliseconds), and for a window [start, end] in seconds:
1. refuses it if it starts or ends after the last timestamp;
2. takes samples bisect_left(t, start) up to bisect_left(t, end), refusing the window if either end lands more
   than 4 s from the timestamp found, and widening an empty window by one sample each side;
3. refuses fewer than 10 samples;
4. estimates the rate as int(1000 / mean(diff(t))) and, when it is not 200 Hz, resamples to 200 Hz with
   `torchaudio.functional.resample` (the Hann-windowed sinc of `resample.py`), in float64;
5. zero-pads at the end, or cuts, to round(end - start) * 200 samples, and returns `(6, L)`.
A refused window is None there (the datasets then raise and draw another sample); a `MediaError` here.

Differences: step 5 pads or cuts to `imu_num_samples`, the model's fixed input length (the release's 2 s
windows give round(2) * 200 = 400, the same); without a window the whole recording is taken (and cut to
`imu_num_samples`, keeping its start). Files: `.npy` `(6, T)` as the release's, or `(T, 6)`, timed by
`<stem>_timestamps.npy` (ms) beside it when there is one, else taken to be at `imu_rate` from 0 ms; or
`.csv` rows of a time in ms then the 6 channels (accelerometer x, y, z, gyroscope x, y, z), with an
optional header row.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from owl2.processing.media.arrays import check_numbers, load_npy
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError, check_file
from owl2.processing.media.resample import resample

MIN_SAMPLES = 10
"""Fewest samples a window may hold (the release's)."""
MAX_MISS_S = 4.0
"""How far a window's ends may be from the nearest timestamps found, in seconds (the release's)."""


def transform_imu(
    signal: np.ndarray | torch.Tensor,
    timestamps_ms: np.ndarray | torch.Tensor,
    window: tuple[float, float] | None = None,
    config: MediaConfig = MediaConfig(),
    source: str | Path = "IMU input",
) -> torch.Tensor:
    """A timed signal to the model's window (steps 1 to 5 above).

    Args:
        signal: `(channels, T)` samples.
        timestamps_ms: `(T,)` increasing sample times in milliseconds.
        window: `(start, end)` in seconds on the timestamps' clock, or None for the whole recording.
        config: The rate, the length and the channel count.
        source: The file named in error messages.

    Returns:
        `(imu_num_channels, imu_num_samples)` float32.

    Raises:
        MediaError: If the shapes disagree, values are not finite, or the window is refused (steps 1 to 3).
    """
    signal = check_numbers(signal, source, "IMU samples", torch.float64)  # float64, as the release resamples
    times = check_numbers(timestamps_ms, source, "IMU timestamps", torch.float64).numpy()
    channels = config.imu_num_channels
    if signal.dim() != 2 or signal.shape[0] != channels or times.shape != (signal.shape[1],):
        raise MediaError(
            f"{source}: IMU samples {tuple(signal.shape)} with timestamps {times.shape}; expected "
            f"({channels}, T) samples and (T,) timestamps"
        )
    _check_length(signal, "recording", source)
    if window is not None:
        first, last = _window_bounds(times, window, source)
        signal, times = signal[:, first:last], times[first:last]
        _check_length(signal, "window", source)
    step = float(np.mean(np.diff(times)))
    if not step > 0:
        raise MediaError(f"{source}: IMU timestamps do not increase; expected increasing times in milliseconds")
    rate = int(1000 * (1 / step))
    if rate <= 0:
        raise MediaError(f"{source}: IMU rate below 1 Hz (a sample every {step:g} ms); expected at least 1 Hz")
    length = config.imu_num_samples
    signal = resample(signal, rate, config.imu_rate)[:, :length]  # (C, <= L), at imu_rate
    return F.pad(signal, (0, length - signal.shape[1])).float()  # zeros at the end: (C, L)


def _check_length(signal: torch.Tensor, part: str, source: str | Path) -> None:
    if signal.shape[1] < MIN_SAMPLES:
        raise MediaError(f"{source}: {signal.shape[1]} IMU samples in the {part}; expected at least {MIN_SAMPLES}")


def _window_bounds(times: np.ndarray, window: tuple[float, float], source: str | Path) -> tuple[int, int]:
    """Sample indices `[first, last)` of `window` (seconds) on `times` (ms), as the release finds them."""
    start, end = window
    start_ms, end_ms, last_ms = start * 1000, end * 1000, times[-1]
    if not end > start:
        raise MediaError(f"{source}: IMU window {start:g}-{end:g} s; expected an end after its start")
    if start_ms > last_ms or end_ms > last_ms:
        raise MediaError(
            f"{source}: IMU window {start:g}-{end:g} s ends after the recording (last sample at "
            f"{last_ms / 1000:g} s); expected a window inside it"
        )
    first, last = bisect_left(times, start_ms), bisect_left(times, end_ms)
    if abs(start - times[first] / 1000) > MAX_MISS_S or abs(end - times[last] / 1000) > MAX_MISS_S:
        raise MediaError(
            f"{source}: IMU window {start:g}-{end:g} s falls in a gap of the recording (nearest samples at "
            f"{times[first] / 1000:g} s and {times[last] / 1000:g} s); expected samples within {MAX_MISS_S:g} s"
        )
    if first == last:
        first, last = max(first - 1, 0), last + 1
    return first, last


def read_imu_file(path: Path, config: MediaConfig = MediaConfig()) -> tuple[np.ndarray, np.ndarray]:
    """`(samples (channels, T), timestamps (T,) in ms)` from a `.npy` (with or without timestamps) or a `.csv`."""
    channels = config.imu_num_channels
    if path.suffix.lower() == ".csv":
        table = _read_csv(path, columns=1 + channels)
        return table[:, 1:].T, table[:, 0]
    signal = load_npy(path, f"IMU samples ({channels}, T) or (T, {channels})")
    if signal.ndim == 2 and signal.shape[0] != channels and signal.shape[1] == channels:
        signal = signal.T  # (T, C) -> (C, T)
    if signal.ndim != 2 or signal.shape[0] != channels:
        raise MediaError(f"{path}: IMU samples of shape {signal.shape}; expected ({channels}, T) or (T, {channels})")
    timestamps_path = path.with_name(f"{path.stem}_timestamps.npy")
    if timestamps_path.is_file():
        return signal, load_npy(timestamps_path, f"IMU timestamps in ms, one per sample of {path.name}")
    return signal, np.arange(signal.shape[1]) * (1000 / config.imu_rate)


def _read_csv(path: Path, columns: int) -> np.ndarray:
    """A comma-separated table of numbers `(rows, columns)`; a first row that is not all numbers is a header."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise MediaError(f"{path}: not a text file; expected a CSV of {columns} columns") from None
    if lines and not _all_numbers(lines[0]):
        lines = lines[1:]
    if not lines:
        raise MediaError(f"{path}: no rows of IMU samples; expected rows of {columns} numbers")
    try:
        table = np.loadtxt(lines, delimiter=",", ndmin=2)
    except ValueError as error:
        raise MediaError(f"{path}: cannot read as a CSV of numbers ({error}); expected {columns} columns") from None
    if table.shape[1] != columns:
        raise MediaError(
            f"{path}: CSV of {table.shape[1]} columns; expected {columns}: the time in ms, then "
            f"{columns - 1} IMU channels"
        )
    return table


def _all_numbers(line: str) -> bool:
    """Whether every comma-separated field of `line` is a number (a row of data, not a header)."""
    for field in line.split(","):
        try:
            float(field)
        except ValueError:
            return False
    return True


def load_imu(
    path: str | Path, config: MediaConfig = MediaConfig(), window: tuple[float, float] | None = None
) -> torch.Tensor:
    """An IMU file as `(imu_num_channels, imu_num_samples)` float32.

    Args:
        path: A `.npy` or `.csv` (see the module docstring).
        config: The rate, the length and the channel count.
        window: `(start, end)` in seconds on the file's clock, or None for the whole recording.
    """
    path = check_file(path, "imu", MEDIA_SUFFIXES["imu"])
    signal, timestamps = read_imu_file(path, config)
    return transform_imu(signal, timestamps, window, config, source=path)
