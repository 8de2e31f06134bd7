"""Audio to `(1, mel bins, frames)`: official `data/data_utils.py`, `make_audio_features(path, mel_bins=128)`,
then `fbank.transpose(0, 1)[None]` as `data/fintune_dataset.py` (`load_audio`) and the eval scripts take it.

The release's steps:
1. `torchaudio.load`: float samples in [-1, 1], `(channels, T)`.
2. `torchaudio.transforms.Resample(rate, 16000)` when the rate differs: a Hann-windowed sinc
   (`resample.py` is the same filter in plain torch).
3. Subtract the mean (a no-op in effect: Kaldi removes each frame's mean anyway).
4. Kaldi `fbank` (htk_compat, Hann window, 128 mel bins, dither 0, 25 ms frames every 10 ms), which reads
   channel 0 only: `(frames, 128)` (`fbank.py`).
5. Zero-pad or cut to 1024 frames (10.24 s).
6. Normalise `(x - (-4.2677393)) / (2 * 4.5689974)`.
7. Transpose to `(128, 1024)` and add a channel axis: `(1, 128, 1024)`, mel bins along the height.
SpecAugment masking is pretraining only, and not here.

Differences: the waveform is taken from one channel first (`MediaConfig.audio_downmix`: channel 0 as the
release, or the mean of the channels); audio shorter than one 25 ms frame, which fails in torchaudio's
`fbank`, is a `MediaError` here, as is empty audio. WAV in PCM is read with the standard library's `wave`;
other WAV encodings and FLAC, MP3 and Ogg with PyAV.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from owl2.processing.media.arrays import check_numbers
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError, check_file
from owl2.processing.media.fbank import fbank
from owl2.processing.media.resample import resample

FRAME_LENGTH_MS = 25.0
"""Kaldi's frame length: the shortest audio that gives a frame."""


def transform_audio(
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    config: MediaConfig = MediaConfig(),
    source: str | Path = "audio input",
) -> torch.Tensor:
    """Decoded samples to the normalised spectrogram (steps 2 to 7 above).

    Args:
        waveform: `(channels, T)` or `(T,)` float samples in [-1, 1].
        sample_rate: Their rate in Hz.
        config: Rates, sizes and normalisation.
        source: The file named in error messages.

    Returns:
        `(1, audio_num_mel_bins, audio_num_frames)` float32.

    Raises:
        MediaError: If the audio is empty, shorter than one frame, or not finite.
    """
    waveform = check_numbers(waveform, source, "audio samples")
    waveform = waveform[None] if waveform.dim() == 1 else waveform  # (C, T)
    if waveform.dim() != 2:
        raise MediaError(f"{source}: audio of shape {tuple(waveform.shape)}; expected (channels, samples)")
    if waveform.shape[1] == 0:
        raise MediaError(f"{source}: empty audio (0 samples); expected at least 1 sample at any rate")
    mono = waveform[0] if config.audio_downmix == "first" else waveform.mean(dim=0)  # (T,)
    mono = resample(mono, sample_rate, config.audio_sample_rate)
    shortest = int(config.audio_sample_rate * FRAME_LENGTH_MS / 1000)
    if mono.numel() < shortest:
        raise MediaError(
            f"{source}: {mono.numel()} samples at {config.audio_sample_rate} Hz; expected at least {shortest} "
            f"(one {FRAME_LENGTH_MS:g} ms frame)"
        )
    features = fbank(mono - mono.mean(), config.audio_sample_rate, config.audio_num_mel_bins)  # (frames, mel)
    frames = features.shape[0]
    features = F.pad(features, (0, 0, 0, max(config.audio_num_frames - frames, 0)))[: config.audio_num_frames]
    features = (features - config.audio_mean) / (2 * config.audio_std)
    return features.T[None].contiguous()  # (1, mel, frames)


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    """`(samples (channels, T) float32 in [-1, 1], rate)`: PCM WAV by `wave`, anything else by PyAV."""
    if path.suffix.lower() == ".wav":
        try:
            return read_pcm_wav(path)
        except wave.Error:
            pass  # not PCM (float or extensible WAV): FFmpeg reads those
        except EOFError:
            raise MediaError(f"{path}: truncated WAV header; expected a readable audio file") from None
    from owl2.processing.media.decode import read_audio

    return read_audio(path)


def read_pcm_wav(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as `(samples (channels, T) float32 in [-1, 1], rate)`, scaled as FFmpeg does.

    8-bit samples are unsigned around 128; 16-, 24- and 32-bit ones signed, divided by 2^(bits - 1).

    Raises:
        wave.Error: If the file is a WAV that is not PCM.
    """
    with wave.open(str(path), "rb") as file:
        channels, width, rate = file.getnchannels(), file.getsampwidth(), file.getframerate()
        raw = file.readframes(file.getnframes())
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 3:
        bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((len(bytes_), 4), dtype=np.uint8)
        padded[:, 1:] = bytes_  # little-endian 24 bits into the top of an int32
        samples = padded.view("<i4")[:, 0].astype(np.float32) / 2**31
    else:
        samples = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32) / 2 ** (8 * width - 1)
    return samples.reshape(-1, channels).T.copy(), rate  # (C, T)


def load_audio(path: str | Path, config: MediaConfig = MediaConfig()) -> torch.Tensor:
    """An audio file as `(1, audio_num_mel_bins, audio_num_frames)` float32.

    Raises:
        MediaError: If the file is missing, not an audio suffix, unreadable, empty, too short or not finite.
    """
    path = check_file(path, "audio", MEDIA_SUFFIXES["audio"])
    waveform, rate = read_audio_file(path)
    return transform_audio(waveform, rate, config, source=path)
