"""fMRI betas to `(1, voxels)`: official `data/fintune_dataset.py` (`load_fmri`) and `eval/fmri_cap_nsd.py`.

The release loads NSD betas `(repeats, voxels)` (subject 1's `nsdgeneral` voxels, 3 repeats of each image)
and averages them over the repeats: `torch.tensor(np.load(path).mean(axis=0)[None])`. A 1-D file
`(voxels,)` is one scan here (the release would average it into a single number).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from owl2.processing.media.arrays import check_numbers, load_npy
from owl2.processing.media.config import MEDIA_SUFFIXES, MediaConfig
from owl2.processing.media.errors import MediaError, check_file


def transform_fmri(
    betas: np.ndarray | torch.Tensor, config: MediaConfig = MediaConfig(), source: str | Path = "fMRI input"
) -> torch.Tensor:
    """`(voxels,)` or `(repeats, voxels)` betas to their mean over repeats, `(1, fmri_num_voxels)` float32.

    Raises:
        MediaError: If the shape or the voxel count is wrong, or values are not finite.
    """
    betas = check_numbers(betas, source, "fMRI values")
    voxels = config.fmri_num_voxels
    shape = tuple(betas.shape)
    betas = betas[None] if betas.dim() == 1 else betas  # (repeats, voxels)
    if betas.dim() != 2 or betas.shape[0] == 0 or betas.shape[1] != voxels:
        raise MediaError(
            f"{source}: fMRI betas of shape {shape}; expected ({voxels},) or (repeats, {voxels}) with at least "
            f"one repeat (fmri_num_voxels={voxels})"
        )
    return betas.mean(dim=0, keepdim=True)  # (1, voxels)


def load_fmri(path: str | Path, config: MediaConfig = MediaConfig()) -> torch.Tensor:
    """A `.npy` of betas as `(1, fmri_num_voxels)` float32."""
    path = check_file(path, "fmri", MEDIA_SUFFIXES["fmri"])
    betas = load_npy(path, f"fMRI betas ({config.fmri_num_voxels},) or (repeats, {config.fmri_num_voxels})")
    return transform_fmri(betas, config, source=path)
