"""Configuration of mPLUG-Owl2 (paper section 3; official `configuration_mplug_owl2.py`).

`Owl2Config` is a composite transformers config with three sub-configs, one per part of the
architecture: the CLIP ViT (`vision_config`), the visual abstractor (`abstractor_config`) and the
modality-adaptive LLaMA-2 decoder (`text_config`, a plain `LlamaConfig`). Presets live as JSON
under `configs/model/`.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig

from owl2.constants import IMAGE_TOKEN_INDEX


@strict
class Owl2VisionConfig(PreTrainedConfig):
    """The CLIP ViT-L/14 vision encoder (official `MplugOwlVisionConfig`)."""

    model_type = "owl2_vision"
    base_config_key = "vision_config"

    hidden_size: int = 1024
    """Width of the transformer."""
    intermediate_size: int = 4096
    """Width of the MLP inside each block."""
    num_hidden_layers: int = 24
    """Number of transformer blocks."""
    num_attention_heads: int = 16
    """Attention heads per block."""
    image_size: int = 448
    """Input resolution in pixels (square); the position table has (image_size / patch_size)^2 + 1 rows."""
    patch_size: int = 14
    """Side of a square patch in pixels."""
    num_channels: int = 3
    """Input channels."""
    hidden_act: str = "quick_gelu"
    """MLP activation (CLIP uses QuickGELU)."""
    layer_norm_eps: float = 1e-6
    """Epsilon of every LayerNorm in the encoder."""

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision_config.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )


@strict
class Owl2AbstractorConfig(PreTrainedConfig):
    """The visual abstractor: learnable queries attending to ViT tokens (official `MplugOwlVisualAbstractorConfig`)."""

    model_type = "owl2_abstractor"
    base_config_key = "abstractor_config"

    num_queries: int = 64
    """Learnable queries; each image becomes num_queries + 1 LLM tokens (the +1 is the end-of-image embedding)."""
    hidden_size: int = 1024
    """Width of the abstractor; equals the vision width, since keys run over [queries; image tokens]."""
    num_hidden_layers: int = 6
    """Number of abstractor layers."""
    num_attention_heads: int = 16
    """Attention heads per layer."""
    intermediate_size: int = 2816
    """Inner width of the SwiGLU FFN."""
    layer_norm_eps: float = 1e-6
    """Epsilon of the LayerNorm on the SwiGLU inner activations (official `ffn_ln`)."""
    norm_eps: float = 1e-5
    """Epsilon of the query, image-token and FFN-input LayerNorms (the official code leaves PyTorch's default)."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"abstractor_config.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )


@strict
class Owl2Config(PreTrainedConfig):
    """mPLUG-Owl2: CLIP ViT -> visual abstractor -> modality-adaptive LLaMA-2.

    Example:
        >>> from owl2 import Owl2Config, Owl2Model
        >>> config = Owl2Config.from_json_file("configs/model/owl2-toy.json")
        >>> model = Owl2Model(config)
    """

    model_type = "owl2"
    sub_configs_defaults = {
        "vision_config": Owl2VisionConfig,
        "abstractor_config": Owl2AbstractorConfig,
        "text_config": LlamaConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    """The ViT (`Owl2VisionConfig`)."""
    abstractor_config: dict | PreTrainedConfig | None = None
    """The visual abstractor (`Owl2AbstractorConfig`)."""
    text_config: dict | PreTrainedConfig | None = None
    """The LLaMA-2 decoder (`LlamaConfig`); its K/V projections and norms get one copy per modality."""
    image_token_index: int = IMAGE_TOKEN_INDEX
    """Placeholder id in `input_ids` that stands for one image."""
    tie_word_embeddings: bool = False
    """LLaMA-2 keeps separate input embeddings and LM head."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.abstractor_config.hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"abstractor_config.hidden_size ({self.abstractor_config.hidden_size}) must equal "
                f"vision_config.hidden_size ({self.vision_config.hidden_size}): the abstractor's keys and values "
                "run over the queries and the image tokens concatenated"
            )
        if self.image_token_index >= 0:
            raise ValueError(f"image_token_index must be negative (outside the vocabulary), got {self.image_token_index}")

    @property
    def num_image_tokens(self) -> int:
        """LLM tokens one image becomes: the abstractor's queries plus the end-of-image embedding."""
        return self.abstractor_config.num_queries + 1

    def get_text_config(self, *args, **kwargs) -> LlamaConfig:
        return self.text_config
