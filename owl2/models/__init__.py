"""The mPLUG-Owl2 architecture: vision encoder, visual abstractor, modality-adaptive decoder, and the whole."""

from owl2.models.owl2 import Owl2CausalLMOutput, Owl2Model, Owl2PreTrainedModel

__all__ = ["Owl2CausalLMOutput", "Owl2Model", "Owl2PreTrainedModel"]
