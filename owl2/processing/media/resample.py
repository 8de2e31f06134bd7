"""Band-limited resampling with a Hann-windowed sinc: the method of `torchaudio.functional.resample`.

OneLLM resamples audio to 16 kHz (official `data/data_utils.py`, `torchaudio.transforms.Resample`) and IMU
signals to 200 Hz (official `data/imu_utils.py`, `torchaudio.functional.resample`), both with torchaudio's
defaults: `sinc_interp_hann`, 6 zero crossings, roll-off 0.99. torchaudio's last release does not match the
torch owl2 needs, so the same filter is written here in plain torch.

With the two rates divided by their gcd into `orig` and `new` samples per block, input sample k lies at time
k / orig and output sample n at time n / new (in blocks), and

    y[n] = sum_k x[k] h(k / orig - n / new),
    h(t) = (c / orig) sinc(c t) cos^2(pi c t / (2 Z))  for |c t| <= Z, else 0,

with cut-off c = 0.99 min(orig, new) cycles per block and Z = 6 zero crossings each side. Output n depends
only on its phase n mod new, so the sum is one strided convolution with `new` kernels (a polyphase filter).
The signal is taken as zero outside its ends; the output has ceil(T new / orig) samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ZERO_CROSSINGS = 6
"""Zero crossings of the sinc kept on each side (torchaudio's `lowpass_filter_width`)."""
ROLLOFF = 0.99
"""Cut-off as a fraction of the lower rate's Nyquist frequency (torchaudio's default)."""


def resample(signal: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample the last axis of `signal` from `orig_rate` to `new_rate` (both integers, in Hz).

    Args:
        signal: Float tensor `(..., T)`; the filter is computed in float64 and applied in its dtype.
        orig_rate: The signal's rate.
        new_rate: The rate wanted.

    Returns:
        `(..., ceil(T * new_rate / orig_rate))`; `signal` itself when the rates are equal.
    """
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"resampling needs positive integer rates, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return signal
    common = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // common, int(new_rate) // common
    cutoff = ROLLOFF * min(orig, new)
    reach = math.ceil(ZERO_CROSSINGS * orig / cutoff)  # input samples on each side of an output sample
    kernels = _polyphase_kernels(orig, new, cutoff, reach).to(signal.dtype)  # (new, 1, 2 reach + orig)

    length = signal.shape[-1]
    flat = signal.reshape(-1, 1, length)  # (B, 1, T)
    padded = F.pad(flat, (reach, reach + orig))
    phases = F.conv1d(padded, kernels, stride=orig)  # (B, new, blocks): output phase j of every block
    interleaved = phases.transpose(1, 2).reshape(flat.shape[0], -1)  # (B, blocks * new), in time order
    out_length = -(-length * new // orig)  # ceil
    return interleaved[:, :out_length].reshape(*signal.shape[:-1], out_length)


def _polyphase_kernels(orig: int, new: int, cutoff: float, reach: int) -> torch.Tensor:
    """`(new, 1, 2 reach + orig)` float64: kernel j weighs the inputs of a block for output phase j.

    Tap i of kernel j is the input sample i - reach samples from the block's start, at time (i - reach) / orig,
    seen from output phase j at time j / new.
    """
    input_times = torch.arange(-reach, reach + orig, dtype=torch.float64) / orig  # (taps,)
    output_times = torch.arange(new, dtype=torch.float64)[:, None] / new  # (new, 1)
    crossings = ((input_times - output_times) * cutoff).clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS)  # (new, taps)
    window = torch.cos(crossings * (math.pi / (2 * ZERO_CROSSINGS))) ** 2
    return (torch.sinc(crossings) * window * (cutoff / orig))[:, None, :]
