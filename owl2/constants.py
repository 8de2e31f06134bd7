"""Token ids and modality names shared by the model, the processor and the data (official `constants.py`).

Kept apart from `owl2.config` so that data tools and the command line can use them without importing
transformers.
"""

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
