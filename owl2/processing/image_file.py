"""Opening an image file safely, shared by the data checks, both families' processors and OneLLM's loaders.

Light on purpose (Pillow only, no torch), so that `owl2 data check` and the command line report a bad file at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError


def load_image(path: Path, name: str | None = None) -> Image.Image:
    """Open and fully decode an image, with Pillow's decompression-bomb limit as an error.

    Args:
        path: The file.
        name: The name in the record, for messages (defaults to `path`).

    Returns:
        The decoded image (any mode; `Owl2ImageProcessor` and OneLLM's loaders convert it).

    Raises:
        ValueError: Missing, empty, unreadable, truncated or oversized image.
    """
    name = name or str(path)
    if not path.is_file():
        raise ValueError(f"image {name!r} not found")
    if path.stat().st_size == 0:
        raise ValueError(f"image {name!r} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"image {name!r} is too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ValueError(f"image {name!r} is not a readable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"image {name!r} is corrupt or truncated ({e})") from None
