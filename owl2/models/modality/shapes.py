"""Input-shape checks shared by the modality tokenizers, with errors that name the modality and both shapes."""

from __future__ import annotations

import torch


def check_shape(modality: str, x: torch.Tensor, expected: tuple[int | str, ...], meaning: str) -> None:
    """Raise unless `x` has `len(expected)` dims and every int entry of `expected` matches its size.

    Args:
        modality: Named in the message, e.g. "audio".
        x: The input.
        expected: One entry per dim: the required size, or a symbol (e.g. "N") for a free one.
        meaning: What the dims are, e.g. "(batch, 1, mel bins, frames)".

    Raises:
        ValueError: naming the modality, the expected shape and the shape given.
    """
    fits = x.dim() == len(expected) and all(
        isinstance(want, str) or want == got for want, got in zip(expected, x.shape, strict=False)
    )
    if not fits:
        want = ", ".join(str(size) for size in expected)
        raise ValueError(f"{modality} input must have shape ({want}) {meaning}, got {tuple(x.shape)}")
