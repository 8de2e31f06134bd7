"""IMU windows against the release's `get_imu_frames` restated (bisection, rate estimate, sinc resampling written
as its sum, padding), the file layouts (.npy either way round, timestamps beside it, CSV), and the bad files."""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
import pytest
import torch

from owl2.processing.media.config import MediaConfig
from owl2.processing.media.errors import MediaError
from owl2.processing.media.imu import load_imu, transform_imu
from tests.processing.media.test_resample import direct_resample

ATOL = 1e-5  # float64 on both sides, then float32 output


def official_imu_frames(signal_6t: np.ndarray, timestamps: np.ndarray, start: float, end: float) -> np.ndarray | None:
    """get_imu_frames on arrays: (6, T) samples and (T,) timestamps in ms -> (6, round(end - start) * 200), or None."""
    signal = signal_6t.T
    if start * 1000 > timestamps[-1] or end * 1000 > timestamps[-1]:
        return None
    first, last = bisect_left(timestamps, start * 1000), bisect_left(timestamps, end * 1000)
    if abs(start - timestamps[first] / 1000) > 4 or abs(end - timestamps[last] / 1000) > 4:
        return None
    if first == last:
        first, last = first - 1, last + 1
    signal, timestamps = signal[first:last], timestamps[first:last]
    if len(signal) < 10:
        return None
    rate = int(1000 * (1 / np.mean(np.diff(timestamps))))
    if rate != 200:
        signal = np.stack([direct_resample(channel, rate, 200) for channel in signal.T], axis=1)
    expected = round(end - start) * 200
    if signal.shape[0] > expected:
        signal = signal[:expected]
    elif signal.shape[0] < expected:
        signal = np.concatenate([signal, np.zeros((expected - signal.shape[0], 6))])
    return signal.T


def recording(seconds: float, rate: float, seed: int = 0, offset_ms: float = 0.0):
    """(6, T) smooth-ish samples and (T,) timestamps in ms at `rate`."""
    rng = np.random.default_rng(seed)
    count = int(seconds * rate)
    times = offset_ms + np.arange(count) * (1000 / rate)
    signal = np.cumsum(rng.standard_normal((6, count)), axis=1) * 0.1 + rng.standard_normal((6, count)) * 0.01
    return signal, times


@pytest.mark.parametrize("rate, window", [(200, (1.0, 3.0)), (200, (0.503, 2.497)), (100, (2.0, 4.0)),
                                          (199.6, (1.5, 3.5)), (50, (0.0, 2.0)), (800, (3.0, 5.0))])  # fmt: skip
def test_matches_the_release_window(tmp_path, rate, window):
    signal, times = recording(8.0, rate, offset_ms=37.0)
    np.save(tmp_path / "uid.npy", signal)
    np.save(tmp_path / "uid_timestamps.npy", times)
    out = load_imu(tmp_path / "uid.npy", window=window)
    assert out.shape == (6, 400) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), official_imu_frames(signal, times, *window), rtol=0, atol=ATOL)


def test_a_window_of_another_length_is_padded_to_the_model_length():
    """The release pads or cuts to round(end - start) * 200 (here 200), which only 2 s windows make the 400 its
    position table takes; owl2 pads or cuts to imu_num_samples."""
    signal, times = recording(3.0, 200)
    out = transform_imu(signal, times, window=(1.2, 2.6))  # 280 samples, zero-padded to 400
    np.testing.assert_allclose(out[:, :280].numpy(), signal[:, 240:520], rtol=0, atol=ATOL)
    assert torch.all(out[:, 280:] == 0)


def test_without_timestamps_or_window_the_recording_is_taken_from_its_start(tmp_path, toy_media):
    signal, _ = recording(1.0, 200)
    np.save(tmp_path / "samples_first.npy", signal.T)  # (T, 6)
    out = load_imu(tmp_path / "samples_first.npy", toy_media)
    assert out.shape == (6, 20)
    np.testing.assert_allclose(out.numpy(), signal[:, :20], rtol=0, atol=ATOL)
    short = transform_imu(signal[:, :12], np.arange(12) * 5.0, config=toy_media)
    assert torch.all(short[:, 12:] == 0) and torch.allclose(short[:, :12], torch.from_numpy(signal[:, :12]).float())


@pytest.mark.parametrize("header", ["", "time_ms,ax,ay,az,gx,gy,gz\n"])
def test_csv_with_or_without_a_header(tmp_path, header):
    signal, times = recording(4.0, 100)
    rows = "\n".join(",".join(f"{v:.9g}" for v in [t, *column]) for t, column in zip(times, signal.T))
    (tmp_path / "walk.csv").write_text(header + rows + "\n")
    out = load_imu(tmp_path / "walk.csv", window=(0.5, 2.5))
    expected = official_imu_frames(np.array([[float(f"{v:.9g}") for v in ch] for ch in signal]), times, 0.5, 2.5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=ATOL)


# -- refused windows and bad files --------------------------------------------------------------------------------
@pytest.mark.parametrize("window, match", [
    ((3.0, 5.0), r"IMU window 3-5 s ends after the recording \(last sample at 3.995 s\)"),
    ((2.0, 2.0), "IMU window 2-2 s; expected an end after its start"),
    ((1.0, 1.02), "4 IMU samples in the window; expected at least 10"),
])  # fmt: skip
def test_refused_windows(window, match):
    signal, times = recording(4.0, 200)
    with pytest.raises(MediaError, match=f"walk.npy: {match}"):
        transform_imu(signal, times, window=window, source="walk.npy")


def test_a_window_in_a_gap_is_refused():
    signal, times = recording(20.0, 200)
    times = np.where(times > 5000, times + 10_000, times)  # 10 s without samples after 5 s
    with pytest.raises(MediaError, match=r"falls in a gap of the recording .* expected samples within 4 s"):
        transform_imu(signal, times, window=(6.0, 8.0), source="gap.npy")


@pytest.mark.parametrize("make, match", [
    (lambda s, t: (s[:3], t), r"IMU samples \(3, 800\) with timestamps \(800,\); expected \(6, T\) samples"),
    (lambda s, t: (s, t[:-1]), r"IMU samples \(6, 800\) with timestamps \(799,\)"),
    (lambda s, t: (np.where(s > 0.1, np.nan, s), t), r"\d+ of 4800 IMU samples are NaN or infinite"),
    (lambda s, t: (s, t[::-1].copy()), r"IMU timestamps do not increase"),
])  # fmt: skip
def test_bad_arrays(make, match):
    signal, times = make(*recording(4.0, 200))
    with pytest.raises(MediaError, match=f"x.npy: {match}"):
        transform_imu(signal, times, source="x.npy")


def test_bad_files(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(100))
    with pytest.raises(MediaError, match=r"flat.npy: IMU samples of shape \(100,\); expected \(6, T\) or \(T, 6\)"):
        load_imu(tmp_path / "flat.npy")
    (tmp_path / "wide.csv").write_text("0,1,2,3\n5,1,2,3\n")
    with pytest.raises(MediaError, match=r"wide.csv: CSV of 4 columns; expected 7: the time in ms, then 6 IMU"):
        load_imu(tmp_path / "wide.csv")
    (tmp_path / "words.csv").write_text("t,a,b,c,d,e,f\n1,2,x,4,5,6,7\n")
    with pytest.raises(MediaError, match=r"words.csv: cannot read as a CSV of numbers"):
        load_imu(tmp_path / "words.csv")
    (tmp_path / "header_only.csv").write_text("t,a,b,c,d,e,f\n")
    with pytest.raises(MediaError, match=r"header_only.csv: no rows of IMU samples; expected rows of 7 numbers"):
        load_imu(tmp_path / "header_only.csv")
    with pytest.raises(MediaError, match=r"gone.csv: no such file; expected an existing imu file \(.npy, .csv\)"):
        load_imu(tmp_path / "gone.csv")
    with pytest.raises(MediaError, match=r"imu.txt: unsupported file type '.txt' for imu; expected .npy, .csv"):
        load_imu(tmp_path / "imu.txt")


def test_a_recording_below_one_hertz_is_refused():
    with pytest.raises(MediaError, match="IMU rate below 1 Hz"):
        transform_imu(np.zeros((6, 12)), np.arange(12) * 2000.0, config=MediaConfig(imu_num_samples=20))


def test_a_recording_of_fewer_than_ten_samples_is_refused():
    with pytest.raises(MediaError, match="tiny.npy: 0 IMU samples in the recording; expected at least 10"):
        transform_imu(np.zeros((6, 0)), np.zeros(0), window=(0.0, 1.0), source="tiny.npy")
