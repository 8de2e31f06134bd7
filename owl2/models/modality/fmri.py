"""OneLLM's fMRI tokenizer (paper appendix C.1, Eq. 7; official `onellm.py`, `Transformer.conv1['fmri']`).

An NSD `nsdgeneral` beta vector `(N, 1, 15724 voxels)` (averaged over the repeats) goes through one
`Linear(15724, 8 * width)` (the paper says a Conv1D to 8196 channels; the release has a Linear to 8192)
whose output is read as `(width, 8)`, channel-major, as the release reshapes it: token t, channel c is
output `c * 8 + t`.
"""

from __future__ import annotations

import torch
from torch import nn

from owl2.config import OneLLMTokenizerConfig
from owl2.models.modality.shapes import check_shape


class FmriTokenizer(nn.Module):
    """`(N, 1, voxels)` fMRI betas -> `(N, num_tokens, width)` tokens (official key `conv1.fmri`)."""

    def __init__(self, config: OneLLMTokenizerConfig, width: int):
        super().__init__()
        self.num_voxels, self.num_tokens, self.width = config.fmri_num_voxels, config.fmri_num_tokens, width
        self.proj = nn.Linear(config.fmri_num_voxels, config.fmri_num_tokens * width)

    def forward(self, betas: torch.Tensor) -> torch.Tensor:
        check_shape("fmri", betas, ("N", 1, self.num_voxels), "(batch, 1, voxels)")
        x = self.proj(betas.to(self.proj.weight.dtype))  # (N, 1, D * T)
        return x.view(x.shape[0], self.width, self.num_tokens).transpose(1, 2)  # (N, T, D)
