"""The Kaldi filterbank against kaldi-native-fbank (an independent C++ port of Kaldi), and at the release's 128
bins (which Kaldi itself refuses: one bin is empty) against a float64 re-statement of Kaldi's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from owl2.processing.media.fbank import fbank, mel_banks

knf = pytest.importorskip("kaldi_native_fbank")

RATE = 16000
KNF_ATOL = 1e-3  # log-mel, float32 on both sides (observed up to 7e-4: 80 bins, tones)
F64_ATOL = 1e-3  # log-mel against float64 at 128 bins (observed up to 6e-4, in narrow bins of small weights)


def signal(kind: str, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / RATE
    if kind == "noise":
        return 0.1 * rng.standard_normal(length)
    if kind == "tones":
        tones = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t + 1.0)
        return tones + 0.01 * rng.standard_normal(length)
    if kind == "silence+noise":
        x = 0.05 * rng.standard_normal(length)
        x[: length // 2] = 0.0
        return x
    if kind == "chirp+dc":
        return 0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t) + 0.2 + 0.01 * rng.standard_normal(length)
    raise ValueError(kind)


def kaldi_native(samples: np.ndarray, num_bins: int, window: str = "hanning") -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.mel_opts.num_bins = num_bins
    opts.use_energy = False
    opts.htk_compat = True
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(RATE, samples.astype(np.float32).tolist())
    computer.input_finished()
    return np.array([computer.get_frame(i) for i in range(computer.num_frames_ready)]).reshape(-1, num_bins)


@pytest.mark.parametrize("num_bins", [24, 64, 80])
@pytest.mark.parametrize("kind, length", [("noise", 16000), ("tones", 16123), ("silence+noise", 8001),
                                          ("chirp+dc", 4567), ("noise", 400), ("noise", 559)])  # fmt: skip
def test_matches_kaldi_native_fbank(num_bins, kind, length):
    samples = signal(kind, length).astype(np.float32)
    expected = kaldi_native(samples, num_bins)
    ours = fbank(torch.from_numpy(samples), RATE, num_bins).numpy()
    assert ours.shape == expected.shape == (1 + (length - 400) // 160, num_bins)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=KNF_ATOL)


def test_povey_window_matches_kaldi_native_fbank():
    samples = signal("tones", 8000).astype(np.float32)
    np.testing.assert_allclose(fbank(torch.from_numpy(samples), window="povey", num_mel_bins=40).numpy(),
                               kaldi_native(samples, 40, "povey"), rtol=0, atol=KNF_ATOL)  # fmt: skip


def reference_fbank_f64(samples: np.ndarray, num_bins: int) -> np.ndarray:
    """Kaldi's fbank restated in float64, frame by frame: 25 ms frames every 10 ms, DC removed, pre-emphasis
    0.97, Hann window, padded to 512, power spectrum, mel triangles 20 Hz to Nyquist, log floored at eps."""
    length, shift, padded = 400, 160, 512

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    low, high = mel(20.0), mel(RATE / 2)
    delta = (high - low) / (num_bins + 1)
    bin_mel = mel(np.arange(padded // 2) * RATE / padded)
    banks = np.zeros((num_bins, padded // 2 + 1))
    for m in range(num_bins):
        left, centre, right = low + m * delta, low + (m + 1) * delta, low + (m + 2) * delta
        for b, value in enumerate(bin_mel):
            if left < value <= centre:
                banks[m, b] = (value - left) / (centre - left)
            elif centre < value < right:
                banks[m, b] = (right - value) / (right - centre)
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / (length - 1)) for i in range(length)])
    rows = []
    for start in range(0, len(samples) - length + 1, shift):
        frame = samples[start : start + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] - 0.97 * frame[0]], frame[1:] - 0.97 * frame[:-1]])
        power = np.abs(np.fft.rfft(np.pad(frame * window, (0, padded - length)))) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.array(rows)


@pytest.mark.parametrize("kind, length", [("noise", 16000), ("tones", 12345), ("silence+noise", 6400)])
def test_the_release_128_bins_match_a_float64_restatement(kind, length):
    samples = signal(kind, length)
    expected = reference_fbank_f64(samples, 128)
    ours = fbank(torch.from_numpy(samples.astype(np.float32)), RATE, 128).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=F64_ATOL)


def test_the_empty_mel_bin_at_128_bins_is_the_log_floor():
    banks = mel_banks(128, 512, RATE)
    assert banks.shape == (128, 257)
    assert (banks.sum(dim=1) == 0).nonzero().flatten().tolist() == [3]  # too narrow for any 31.25 Hz FFT bin
    assert torch.all(banks[:, -1] == 0)  # the Nyquist bin is never weighed
    out = fbank(torch.randn(4000), RATE, 128)
    assert torch.all(out[:, 3] == math.log(torch.finfo(torch.float32).eps))


def test_silence_is_the_log_floor_and_short_input_has_no_frames():
    assert torch.all(fbank(torch.zeros(1600)) == math.log(torch.finfo(torch.float32).eps))
    assert fbank(torch.zeros(399)).shape == (0, 128)
    assert fbank(torch.zeros(400)).shape == (1, 128)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="mono waveform"):
        fbank(torch.zeros(2, 1000))
    with pytest.raises(ValueError, match="window must be one of"):
        fbank(torch.zeros(1000), window="hamming")
