"""Audio files to `(1, mel, frames)`: decoding (WAV by `wave`, FLAC/MP3/Ogg/float WAV by PyAV), the release's
pipeline against a float64 re-statement, padding and cutting, channels, and one error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from owl2.processing.media.audio import load_audio, read_audio_file, transform_audio
from owl2.processing.media.config import MediaConfig
from owl2.processing.media.errors import MediaError
from tests.processing.media.conftest import write_audio_av, write_wav
from tests.processing.media.test_fbank import reference_fbank_f64
from tests.processing.media.test_resample import direct_resample

MEAN, STD = -4.2677393, 4.5689974  # the release's normalisation constants (data_utils.py)
ATOL = 2e-4  # on normalised values: the fbank's 1e-3 in log-mel, divided by 2 * 4.57
ROUNDING = 1e-4  # the same audio computed two ways in float32 (the mean, a cut): rounding, amplified by the log


def reference_features(samples: np.ndarray, rate: int, mel_bins: int, frames: int) -> np.ndarray:
    """`make_audio_features` then `.transpose(0, 1)[None]`, restated: first channel, resample to 16 kHz, subtract
    the mean, fbank, zero-pad or cut the frames, `(x + 4.2677393) / (2 * 4.5689974)`, mel bins first."""
    mono = samples[0].astype(np.float64)
    if rate != 16000:
        mono = direct_resample(mono, rate, 16000)
    bank = reference_fbank_f64(mono - mono.mean(), mel_bins)  # (frames, mel)
    bank = np.concatenate([bank, np.zeros((max(frames - len(bank), 0), mel_bins))])[:frames]
    return ((bank - MEAN) / (2 * STD)).T[None]  # (1, mel, frames)


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return 0.2 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)).clip(-4, 4) / 4


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_wav_is_scaled_as_ffmpeg_does(tmp_path, width):
    samples = noise(0.05, 8000, channels=2)
    write_wav(tmp_path / "a.wav", samples, 8000, width)
    decoded, rate = read_audio_file(tmp_path / "a.wav")
    scale = 2 ** (8 * width - 1)
    expected = np.clip(np.round(samples * scale), -scale, scale - 1) / scale  # the integers written, over 2^(bits-1)
    assert rate == 8000 and decoded.shape == (2, len(samples)) and decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, expected.T, rtol=0, atol=1e-7)


def test_flac_decodes_to_the_same_samples_as_a_16_bit_wav(tmp_path):
    samples = noise(0.3, 16000)[:, 0]
    write_wav(tmp_path / "a.wav", samples * 32767 / 32768, 16000)
    write_audio_av(tmp_path / "a.flac", samples, 16000, "flac")  # writes round(x * 32767) as int16
    wav, _ = read_audio_file(tmp_path / "a.wav")
    flac, rate = read_audio_file(tmp_path / "a.flac")
    assert rate == 16000
    np.testing.assert_array_equal(flac, wav)


def test_float_wav_falls_back_to_pyav(tmp_path):
    samples = noise(0.1, 22050)[:, 0]
    write_audio_av(tmp_path / "f.wav", samples, 22050, "pcm_f32le")
    decoded, rate = read_audio_file(tmp_path / "f.wav")
    assert rate == 22050
    np.testing.assert_allclose(decoded[0], samples, rtol=0, atol=1e-7)


@pytest.mark.parametrize("codec, suffix, rate", [("libmp3lame", ".mp3", 16000), ("libopus", ".ogg", 48000)])
def test_lossy_formats_load(tmp_path, codec, suffix, rate):
    write_audio_av(tmp_path / f"a{suffix}", noise(0.5, rate)[:, 0], rate, codec)
    out = load_audio(tmp_path / f"a{suffix}")
    assert out.shape == (1, 128, 1024) and torch.isfinite(out).all()


@pytest.mark.parametrize("seconds, rate", [(1.0, 16000), (0.1, 8000), (0.06, 44100), (10.5, 16000)])
def test_the_release_pipeline(tmp_path, seconds, rate):
    samples = noise(seconds, rate, channels=2)
    write_wav(tmp_path / "a.wav", samples, rate)
    decoded, _ = read_audio_file(tmp_path / "a.wav")
    out = load_audio(tmp_path / "a.wav")
    assert out.shape == (1, 128, 1024) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference_features(decoded, rate, 128, 1024), rtol=0, atol=ATOL)


def test_padding_is_zeros_before_normalising_and_long_audio_is_cut(tmp_path):
    short = transform_audio(noise(0.5, 16000).T, 16000)  # 48 frames
    assert torch.allclose(short[0, :, 48:], torch.tensor(-MEAN / (2 * STD)))
    assert not torch.allclose(short[0, :, 47], torch.tensor(-MEAN / (2 * STD)))
    long = noise(11.0, 16000).T  # 1098 frames, cut to the first 1024, which read samples [0, 1023 * 160 + 400)
    first_1024 = long[:, : 1023 * 160 + 400]
    torch.testing.assert_close(transform_audio(long, 16000), transform_audio(first_1024, 16000), rtol=0, atol=ROUNDING)


def test_toy_sizes(toy_media):
    samples = noise(0.6, 16000).T
    out = transform_audio(samples, 16000, toy_media)
    assert out.shape == (1, 24, 34)
    np.testing.assert_allclose(out.numpy(), reference_features(samples, 16000, 24, 34), rtol=0, atol=ATOL)


def test_channels_first_as_the_release_or_their_mean():
    stereo = noise(0.5, 16000, channels=2, seed=3).T  # (2, T)
    torch.testing.assert_close(transform_audio(stereo, 16000), transform_audio(stereo[:1], 16000))
    mean = MediaConfig(audio_downmix="mean")
    expected = transform_audio(stereo.mean(0), 16000)  # float64 mean here, float32 there: rounding in the log
    torch.testing.assert_close(transform_audio(stereo, 16000, mean), expected, rtol=0, atol=ROUNDING)


# -- bad files: one clear error each --------------------------------------------------------------------------
def test_empty_audio(tmp_path):
    write_wav(tmp_path / "clip.wav", np.zeros((0, 1)), 16000)
    expected = r"clip.wav: empty audio \(0 samples\); expected at least 1 sample at any rate"
    with pytest.raises(MediaError, match=expected):
        load_audio(tmp_path / "clip.wav")


def test_audio_shorter_than_one_frame(tmp_path):
    write_wav(tmp_path / "blip.wav", noise(0.02, 16000), 16000)  # 320 samples
    expected = r"blip.wav: 320 samples at 16000 Hz; expected at least 400 \(one 25 ms frame\)"
    with pytest.raises(MediaError, match=expected):
        load_audio(tmp_path / "blip.wav")


def test_not_finite_samples():
    samples = noise(0.5, 16000).T.copy()
    samples[0, 7] = np.nan
    with pytest.raises(MediaError, match=r"take.wav: 1 of 8000 audio samples are NaN or infinite"):
        transform_audio(samples, 16000, source="take.wav")


def test_missing_file_wrong_suffix_and_garbage(tmp_path):
    with pytest.raises(MediaError, match=r"gone.wav: no such file; expected an existing audio file \(.wav, .flac"):
        load_audio(tmp_path / "gone.wav")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MediaError, match=r"notes.txt: unsupported file type '.txt' for audio; expected .wav, .flac"):
        load_audio(tmp_path / "notes.txt")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(MediaError, match=r"noise.mp3: cannot (open|decode)"):
        load_audio(tmp_path / "noise.mp3")
    (tmp_path / "text.wav").write_text("not a riff file at all")
    with pytest.raises(MediaError, match=r"text.wav: cannot open as audio"):
        load_audio(tmp_path / "text.wav")
