"""Synthetic audio: one to three beeps, low or high, each a rising or falling chirp; 16-bit mono PCM WAV.

The clip lasts as long as the spectrogram the `MediaConfig` keeps (0.355 s for the toy's 34 frames), at most
1 s, so every beep reaches the model. Low beeps sweep within 300-675 Hz, high ones within 1800-3900 Hz.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np

from owl2.data.synthetic import NUMBERS
from owl2.data.synthetic_media.common import Item, numpy_rng
from owl2.processing.media.audio import FRAME_LENGTH_MS
from owl2.processing.media.config import MediaConfig

QUESTION_TYPES = ("pitch", "count", "direction")
"""What can be asked of a clip."""
BANDS = {"low": (300.0, 450.0), "high": (1800.0, 2600.0)}
"""Pitch -> the range of a beep's lowest frequency in Hz; each beep sweeps from it to 1.5 times it."""
SWEEP = 1.5
"""Ratio of a beep's highest to its lowest frequency."""
HOP_MS = 10.0
"""Kaldi's frame shift: the spectrogram's time step."""
RAMP_S = 0.004
"""Raised-cosine fade at each end of a beep, against clicks."""


def clip_duration(config: MediaConfig) -> float:
    """Seconds of audio the spectrogram covers (`audio_num_frames` frames), at most 1 s."""
    return min(1.0, (FRAME_LENGTH_MS + (config.audio_num_frames - 1) * HOP_MS) / 1000)


def beeps(count: int, pitch_hz: float, rising: bool, duration: float, rate: int, gain: float) -> np.ndarray:
    """`count` chirps, evenly spaced over `duration` seconds, as float samples in [-1, 1]."""
    samples = np.zeros(int(round(duration * rate)))
    slot = len(samples) // count
    length = int(slot * 0.6)
    t = np.arange(length) / rate
    low, high = (pitch_hz, pitch_hz * SWEEP) if rising else (pitch_hz * SWEEP, pitch_hz)
    phase = 2 * np.pi * (low * t + (high - low) * t**2 / (2 * t[-1]))  # linear chirp: f(t) = low + (high - low) t / T
    ramp = min(int(RAMP_S * rate), length // 2)
    envelope = np.ones(length)
    envelope[:ramp] = envelope[-ramp:][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    for k in range(count):
        start = k * slot + int(slot * 0.2)
        samples[start : start + length] = gain * envelope * np.sin(phase)
    return samples


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Float samples in [-1, 1] as 16-bit mono PCM."""
    ints = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(ints.tobytes())


def make(rng: random.Random, config: MediaConfig, folder: Path, stem: str) -> Item:
    """Write `folder/stem.wav` and describe it."""
    count = rng.randint(1, 3)
    pitch = rng.choice(sorted(BANDS))
    direction = rng.choice(("rising", "falling"))
    base = rng.uniform(*BANDS[pitch])
    gain = rng.uniform(0.4, 0.8)
    noise = numpy_rng(rng).normal(0, 0.002, int(round(clip_duration(config) * config.audio_sample_rate)))
    samples = beeps(count, base, direction == "rising", clip_duration(config), config.audio_sample_rate, gain)
    write_wav(folder / f"{stem}.wav", samples + noise[: len(samples)], config.audio_sample_rate)
    noun = "beep" if count == 1 else "beeps"
    return Item(
        value=f"{folder.name}/{stem}.wav",
        caption=f"{NUMBERS[count]} {pitch} {direction} {noun} .",
        questions={
            "pitch": ("is the tone high or low ?", pitch),
            "count": ("how many beeps ?", NUMBERS[count]),
            "direction": ("is the tone rising or falling ?", direction),
        },
    )
