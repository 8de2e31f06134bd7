"""owl2: mPLUG-Owl2 (arXiv 2311.04257) and OneLLM (arXiv 2312.03700) on torch, transformers and timm."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "IGNORE_INDEX": "owl2.constants",
    "IMAGE_TOKEN_INDEX": "owl2.constants",
    "ONELLM_MODALITY_TOKEN_INDEX": "owl2.constants",
    "OneLLMConfig": "owl2.config",
    "OneLLMModel": "owl2.models.onellm",
    "OneLLMProjectionConfig": "owl2.config",
    "OneLLMTokenizerConfig": "owl2.config",
    "Owl2AbstractorConfig": "owl2.config",
    "Owl2Config": "owl2.config",
    "Owl2VisionConfig": "owl2.config",
    "Owl2Model": "owl2.models.owl2",
    "Owl2ImageProcessor": "owl2.processing.image",
    "Owl2Processor": "owl2.processing.processor",
    "OneLLMProcessor": "owl2.processing.processor",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
