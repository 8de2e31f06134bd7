"""Turning images and text into model inputs: image processor, chat templates, tokenization, processor."""

from owl2.processing.image import Owl2ImageProcessor
from owl2.processing.processor import Owl2Processor
from owl2.processing.templates import IMAGE_PLACEHOLDER, TEMPLATES, ChatTemplate, get_template
from owl2.processing.tokenization import EncodedConversation, TruncationError, encode_conversation, truncate

__all__ = [
    "IMAGE_PLACEHOLDER",
    "TEMPLATES",
    "ChatTemplate",
    "EncodedConversation",
    "Owl2ImageProcessor",
    "Owl2Processor",
    "TruncationError",
    "encode_conversation",
    "get_template",
    "truncate",
]
