"""owl2: mPLUG-Owl2 (arXiv 2311.04257) on torch, transformers and timm."""

from owl2.config import IGNORE_INDEX, IMAGE_TOKEN_INDEX, Owl2AbstractorConfig, Owl2Config, Owl2VisionConfig
from owl2.models import Owl2Model

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "Owl2AbstractorConfig",
    "Owl2Config",
    "Owl2Model",
    "Owl2VisionConfig",
]
