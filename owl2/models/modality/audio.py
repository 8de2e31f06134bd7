"""OneLLM's audio tokenizer (paper appendix C.1, Eq. 4; official `onellm.py`, `Transformer.conv1['audio']`).

A log-mel spectrogram `(N, 1, 128 mel bins, 1024 frames)` (kaldi fbank at a 10 ms shift, normalised as
in AST; official `data/data_utils.make_audio_features`, transposed to mel-first) is cut into
overlapping 16 x 16 patches at stride 10 by one `Conv2d`: 12 x 101 = 1212 tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from owl2.config import OneLLMTokenizerConfig
from owl2.models.modality.shapes import check_shape


class AudioTokenizer(nn.Module):
    """`(N, 1, mel_bins, frames)` spectrograms -> `(N, rows * cols, width)` tokens (official key `conv1.audio`)."""

    def __init__(self, config: OneLLMTokenizerConfig, width: int):
        super().__init__()
        self.shape = (1, config.audio_num_mel_bins, config.audio_num_frames)
        self.proj = nn.Conv2d(1, width, kernel_size=config.audio_patch_size, stride=config.audio_patch_stride)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        check_shape("audio", spectrogram, ("N", *self.shape), "(batch, 1, mel bins, frames)")
        x = self.proj(spectrogram.to(self.proj.weight.dtype))  # (N, D, rows, cols)
        # Row-major over the patch grid, as the release flattens it: token = mel patch * cols + time patch.
        return x.flatten(2).transpose(1, 2)  # (N, rows * cols, D)
