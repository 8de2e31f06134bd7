"""The architectures: mPLUG-Owl2 (vision encoder, visual abstractor, modality-adaptive decoder) and OneLLM
(modality tokenizers, universal encoder, universal projection, LLaMA), and what the two share (`multimodal`)."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "MultimodalCausalLMOutput": "owl2.models.multimodal",
    "OneLLMModel": "owl2.models.onellm",
    "OneLLMPreTrainedModel": "owl2.models.onellm",
    "Owl2CausalLMOutput": "owl2.models.owl2",
    "Owl2Model": "owl2.models.owl2",
    "Owl2PreTrainedModel": "owl2.models.owl2",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
