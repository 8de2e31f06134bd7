"""owl2: mPLUG-Owl2 (arXiv 2311.04257) on torch, transformers and timm."""

from owl2.config import IGNORE_INDEX, IMAGE_TOKEN_INDEX, Owl2AbstractorConfig, Owl2Config, Owl2VisionConfig
from owl2.models import Owl2Model
from owl2.processing import Owl2ImageProcessor, Owl2Processor

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "Owl2AbstractorConfig",
    "Owl2Config",
    "Owl2ImageProcessor",
    "Owl2Model",
    "Owl2Processor",
    "Owl2VisionConfig",
]
