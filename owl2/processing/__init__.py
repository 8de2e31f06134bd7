"""Turning files and text into model inputs: image processor, OneLLM's media loaders (`media`), chat templates,
tokenization, processors."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "Owl2ImageProcessor": "owl2.processing.image",
    "Owl2Processor": "owl2.processing.processor",
    "OneLLMProcessor": "owl2.processing.processor",
    "MultimodalProcessor": "owl2.processing.processor",
    "PLACEHOLDERS": "owl2.processing.templates",
    "IMAGE_PLACEHOLDER": "owl2.processing.templates",
    "TEMPLATES": "owl2.processing.templates",
    "ChatTemplate": "owl2.processing.templates",
    "get_template": "owl2.processing.templates",
    "EncodedConversation": "owl2.processing.tokenization",
    "TruncationError": "owl2.processing.tokenization",
    "encode_conversation": "owl2.processing.tokenization",
    "truncate": "owl2.processing.tokenization",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
