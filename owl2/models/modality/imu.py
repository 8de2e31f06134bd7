"""OneLLM's IMU tokenizer (paper appendix C.1, Eq. 6; official `onellm.py`, `Transformer.conv1['imu']`).

A window of Ego4D IMU signal `(N, 6 channels, 400 samples)` (2 s at 200 Hz; official
`data/imu_utils.get_imu_frames`) goes through one `Conv1d(6, width, 10, bias=False)`: 391 tokens, one per
position of the kernel. The paper's "R^{2000 x 6} -> 391 tokens" does not add up; the release's
392-row position table fixes the window at 400 samples.
"""

from __future__ import annotations

import torch
from torch import nn

from owl2.config import OneLLMTokenizerConfig
from owl2.models.modality.shapes import check_shape


class ImuTokenizer(nn.Module):
    """`(N, channels, samples)` IMU windows -> `(N, samples - kernel + 1, width)` tokens (official `conv1.imu`)."""

    def __init__(self, config: OneLLMTokenizerConfig, width: int):
        super().__init__()
        self.shape = (config.imu_num_channels, config.imu_num_samples)
        self.proj = nn.Conv1d(
            config.imu_num_channels, width, kernel_size=config.imu_kernel_size, stride=config.imu_stride, bias=False
        )

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        check_shape("imu", signal, ("N", *self.shape), "(batch, channels, samples)")
        return self.proj(signal.to(self.proj.weight.dtype)).transpose(1, 2)  # (N, L, D)
