"""The sinc resampler against the sum it stands for, written out sample by sample in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from owl2.processing.media.resample import resample


def direct_resample(x: np.ndarray, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """torchaudio's `sinc_interp_hann` as its definition: y[n] = sum_k x[k] h(k/orig - n/new) on the reduced rates,
    h(t) = (c/orig) sinc(c t) cos^2(pi c t / 2Z) for |c t| <= Z, else 0, with c = rolloff * min(orig, new)."""
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    c = rolloff * min(orig, new)
    n = np.arange(math.ceil(len(x) * new / orig))[:, None]
    k = np.arange(len(x))[None, :]
    u = (k / orig - n / new) * c  # (outputs, inputs), in zero crossings
    h = np.where(np.abs(u) <= zeros, (c / orig) * np.sinc(u) * np.cos(np.pi * u / (2 * zeros)) ** 2, 0.0)
    return h @ x


@pytest.mark.parametrize("orig, new", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000), (199, 200),
                                       (100, 200), (250, 200), (11025, 16000)])  # fmt: skip
def test_matches_the_direct_sum(orig, new):
    x = np.random.default_rng(orig).standard_normal(157)
    expected = direct_resample(x, orig, new)
    ours = resample(torch.from_numpy(x), orig, new)
    assert ours.dtype == torch.float64 and ours.shape == expected.shape
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)


def test_leading_axes_are_kept_and_float32_stays_float32():
    x = torch.randn(2, 3, 1000, generator=torch.Generator().manual_seed(0))
    out = resample(x, 44100, 16000)
    assert out.shape == (2, 3, math.ceil(1000 * 160 / 441)) and out.dtype == torch.float32
    torch.testing.assert_close(out[1, 2], resample(x[1, 2], 44100, 16000))


def test_a_low_tone_survives_resampling():
    t = np.arange(44100) / 44100
    out = resample(torch.from_numpy(np.sin(2 * np.pi * 440 * t)), 44100, 16000).numpy()
    expected = np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=2e-3)  # away from the zero-padded ends


def test_equal_rates_return_the_signal_and_bad_rates_are_refused():
    x = torch.randn(10)
    assert resample(x, 16000, 16000) is x
    with pytest.raises(ValueError, match="positive integer rates"):
        resample(x, 0, 16000)
    with pytest.raises(ValueError, match="positive integer rates"):
        resample(x, 22050.5, 16000)
