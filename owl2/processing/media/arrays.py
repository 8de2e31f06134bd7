"""Numeric files and arrays: `.npy` loading and the number checks of the point, IMU and fMRI loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from owl2.processing.media.errors import MediaError


def load_npy(path: Path, what: str) -> np.ndarray:
    """`np.load` of one plain array (no pickles); a failure is a `MediaError` saying `what` was expected."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise MediaError(f"{path}: cannot read as a .npy array ({error}); expected {what}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive saved under a .npy name
        raise MediaError(f"{path}: holds several arrays (.npz); expected one array, {what}")
    return array


def check_numbers(
    values: np.ndarray | torch.Tensor, source: str | Path, what: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """`values` as a float tensor, if they are real numbers and all finite.

    Args:
        values: A numpy array or a tensor, of any shape.
        source: The file (or other source) named in messages.
        what: What the numbers are, e.g. "IMU samples".
        dtype: The float dtype returned.

    Raises:
        MediaError: If the values are not real numbers (strings, complex, objects), or some are NaN or infinite.
    """
    if isinstance(values, np.ndarray):
        numeric = np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    else:
        numeric = not values.is_complex() and values.dtype != torch.bool
    if not numeric:
        raise MediaError(f"{source}: {what} of dtype {values.dtype}; expected real numbers")
    tensor = torch.as_tensor(values).to(dtype)
    finite = torch.isfinite(tensor)
    if not finite.all():
        bad = int((~finite).sum())
        raise MediaError(f"{source}: {bad} of {tensor.numel()} {what} are NaN or infinite; expected finite numbers")
    return tensor
