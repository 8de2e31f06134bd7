"""What a bad media file is: `MediaError`, and the file check every loader starts with.

Each failure is one line that names the file and says what was expected, e.g.
`clip.wav: empty audio (0 samples); expected at least 1 sample at any rate`. The official loaders
have no such checks: their datasets catch every exception and retry with a random other sample.

Light on purpose (no torch, no numpy at import), so that a command line can catch `MediaError`
before it loads anything heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class MediaError(ValueError):
    """A media file that cannot become a model input: missing, unreadable, of the wrong kind or shape."""


def check_file(path: str | Path, modality: str, suffixes: Sequence[str]) -> Path:
    """`path` as a `Path`, if it is an existing file with one of `suffixes` (compared in lower case).

    Raises:
        MediaError: If the suffix is not accepted for `modality`, or the file does not exist.
    """
    path = Path(path)
    expected = ", ".join(suffixes)
    if path.suffix.lower() not in suffixes:
        suffix = path.suffix or "(none)"
        raise MediaError(f"{path}: unsupported file type {suffix!r} for {modality}; expected {expected}")
    if not path.is_file():
        raise MediaError(f"{path}: no such file; expected an existing {modality} file ({expected})")
    return path
