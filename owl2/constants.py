"""Token ids and modality names shared by the model, the processor and the data (official `constants.py`).

Kept apart from `owl2.config` so that data tools and the command line can use them without importing
transformers.
"""

import os
from types import MappingProxyType

IMAGE_TOKEN_INDEX = -200
"""Placeholder id in `input_ids` where an image goes (the official value)."""

IGNORE_INDEX = -100
"""Label id the loss skips (PyTorch's cross-entropy default)."""

MODALITIES = ("text", "image")
"""Modality names; a token's modality id is its index here (the official multiway index)."""

ONELLM_MODALITIES = ("image", "video", "audio", "point", "rgbd", "rgbn", "fmri", "imu")
"""OneLLM's modalities, in the release's order (official `onellm.py`, `Transformer.modals`)."""

ONELLM_PIXEL_MODALITIES = ("image", "video", "rgbd", "rgbn")
"""OneLLM modalities whose frames enter CLIP through its own patch embedding and position table; the
others (audio, point, imu, fmri) have a tokenizer and a learned position table of their own."""

ONELLM_MODALITY_TOKEN_INDEX = MappingProxyType({
    "image": IMAGE_TOKEN_INDEX,  # -200, as in mPLUG-Owl2
    "video": -201,
    "audio": -202,
    "point": -203,
    "rgbd": -204,
    "rgbn": -205,
    "fmri": -206,
    "imu": -207,
})
"""Placeholder id in `input_ids` where one input of each OneLLM modality goes: -200 down, in the release's order.

The release has no placeholders (it puts its one input right after BOS); owl2 gives each modality its own
negative id, outside every vocabulary, so that a prompt can hold several inputs of several modalities.
Read-only; `OneLLMConfig.modality_token_index` defaults to a copy (of its configured modalities' entries)."""

DEBUG_ENV = "OWL2_DEBUG"
"""Environment variable that, set to anything but "" or "0", lets the `owl2` command and the training entry
point show a traceback where they would print one line for bad input or a failed write."""


def debug_enabled() -> bool:
    """Whether `DEBUG_ENV` asks for tracebacks."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")
