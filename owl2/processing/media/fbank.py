"""Kaldi's log mel filterbank (`compute-fbank-feats`) in plain torch, for the options OneLLM uses.

The release calls `torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=16000,
use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)` (official
`data/data_utils.py`, `make_audio_features`); torchaudio's last release does not match the torch owl2
needs. Kaldi's other defaults apply: 25 ms frames, DC offset removed per frame, pre-emphasis 0.97, frames
zero-padded to a power of two, power spectrum, mel bins from 20 Hz to Nyquist, natural log floored at
float32's epsilon, only whole frames ("snip edges"). Without the energy term `htk_compat` changes
nothing, and with `dither=0` nothing is random, so neither appears below.

Per frame of L samples x (L = 400 at 16 kHz), padded to N = 512:
    x <- x - mean(x);  x[i] <- x[i] - 0.97 x[i-1] (x[-1] = x[0]);  x <- x * window
    P[b] = |rfft(x, N)[b]|^2,  b = 0 .. N/2
    fbank[m] = log(max(sum_b P[b] T[m, b], eps))
with T[m] the triangle of mel bin m, on the mel scale mel(f) = 1127 ln(1 + f / 700). The tests check it against
`kaldi-native-fbank`, an independent C++ port of Kaldi's feature code, up to 80 bins; at the release's 128
bins, which Kaldi refuses (bin 3 holds no spectrum bin), against a float64 restatement of these formulas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WINDOWS = ("hanning", "povey")
"""Window shapes: "hanning" (what OneLLM uses) and "povey" (Kaldi's default, a Hann window to the power 0.85)."""
LOW_FREQ = 20.0
"""Lowest frequency of the mel bins, in Hz (Kaldi's default); the highest is the Nyquist frequency."""
PREEMPHASIS = 0.97
"""Pre-emphasis coefficient (Kaldi's default)."""


def fbank(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "hanning",
) -> torch.Tensor:
    """Log mel filterbank energies of a mono waveform, one row per 10 ms frame.

    Args:
        waveform: `(samples,)` float samples (any scale: Kaldi takes them as they are).
        sample_rate: The waveform's rate in Hz.
        num_mel_bins: Mel bins per frame.
        frame_length_ms: Frame length; 25 ms is 400 samples at 16 kHz.
        frame_shift_ms: Hop between frames.
        window: "hanning" or "povey".

    Returns:
        `(frames, num_mel_bins)` float32, `frames = 1 + (samples - frame_length) // frame_shift`, or 0 frames
        when the waveform is shorter than one frame.
    """
    if waveform.dim() != 1:
        raise ValueError(f"fbank takes a mono waveform (samples,), got shape {tuple(waveform.shape)}")
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    length = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    padded = 1 << (length - 1).bit_length()  # the next power of two
    waveform = waveform.float()
    if waveform.numel() < length:
        return waveform.new_zeros(0, num_mel_bins)

    frames = waveform.unfold(0, length, shift)  # (F, L), snip edges: whole frames only
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[i-1], with x[-1] = x[0]
    frames = (frames - PREEMPHASIS * previous) * _window(window, length)
    spectrum = torch.fft.rfft(F.pad(frames, (0, padded - length)), dim=1)  # (F, N/2 + 1)
    power = spectrum.real**2 + spectrum.imag**2
    energies = power @ mel_banks(num_mel_bins, padded, sample_rate).T  # (F, mel)
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


def mel_banks(num_mel_bins: int, padded_length: int, sample_rate: int) -> torch.Tensor:
    """Kaldi's triangular mel filters `(num_mel_bins, padded_length // 2 + 1)`, float32.

    Bin m rises from mel edge m to edge m + 1 and falls to edge m + 2, the num_mel_bins + 2 edges spaced
    evenly in mel from `LOW_FREQ` to Nyquist; the weights are linear in mel, not in Hz. The Nyquist column
    is zero (Kaldi weighs only the first N/2 spectrum bins). Computed in float32, as Kaldi and torchaudio
    do: a narrow triangle's small weights depend on that rounding (up to 1e-3 in the log), so matching
    the release means rounding as it did. A bin too narrow to hold any spectrum bin is all zeros (at 16 kHz
    with 128 bins, bin 3): torchaudio allows that and gives it log(eps); Kaldi itself refuses.
    """
    mel_low, mel_high = _mel(LOW_FREQ), _mel(sample_rate / 2)
    spacing = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + spacing * torch.arange(num_mel_bins + 2, dtype=torch.float32)  # (mel + 2,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (mel, 1) each
    bin_frequencies = torch.arange(padded_length // 2, dtype=torch.float32) * (sample_rate / padded_length)
    bin_mels = _mel(bin_frequencies)  # (N/2,)
    rising = (bin_mels - left) / (centre - left)
    falling = (right - bin_mels) / (right - centre)
    weights = torch.minimum(rising, falling).clamp_min(0)  # (mel, N/2)
    return F.pad(weights, (0, 1))  # (mel, N/2 + 1)


def _mel(frequency):
    """Kaldi's mel scale 1127 ln(1 + f / 700), of a float (in double) or a tensor (in its dtype)."""
    if isinstance(frequency, torch.Tensor):
        return 1127.0 * torch.log(1.0 + frequency / 700.0)
    return 1127.0 * math.log(1.0 + frequency / 700.0)


def _window(kind: str, length: int) -> torch.Tensor:
    """Kaldi's symmetric Hann window 0.5 - 0.5 cos(2 pi i / (L - 1)), or "povey": that to the power 0.85."""
    hann = torch.hann_window(length, periodic=False, dtype=torch.float64)
    return (hann if kind == "hanning" else hann**0.85).float()
