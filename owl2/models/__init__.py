"""The mPLUG-Owl2 architecture: vision encoder, visual abstractor, modality-adaptive decoder, and the whole."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "Owl2CausalLMOutput": "owl2.models.owl2",
    "Owl2Model": "owl2.models.owl2",
    "Owl2PreTrainedModel": "owl2.models.owl2",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
