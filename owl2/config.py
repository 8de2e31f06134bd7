"""Configuration of mPLUG-Owl2 (paper section 3; official `configuration_mplug_owl2.py`) and OneLLM's parts.

`Owl2Config` is a composite transformers config with three sub-configs, one per part of the
architecture: the CLIP ViT (`vision_config`), the visual abstractor (`abstractor_config`) and the
modality-adaptive LLaMA-2 decoder (`text_config`, a plain `LlamaConfig`). Presets live as JSON
under `configs/model/`.

OneLLM (arXiv 2312.03700, section 3.1 and appendix C.1; official `model/LLM/onellm.py`) adds two
sub-configs: its modality tokenizers (`OneLLMTokenizerConfig`) and its universal projection module
(`OneLLMProjectionConfig`). Its universal encoder is the same CLIP ViT, configured by `Owl2VisionConfig`.
`OneLLMConfig` composes them with a plain `LlamaConfig` and one placeholder id per modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig

from owl2.constants import IMAGE_TOKEN_INDEX, ONELLM_MODALITIES, ONELLM_MODALITY_TOKEN_INDEX, ONELLM_PIXEL_MODALITIES


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

    @property
    def num_tokens_per_input(self) -> int:
        """LLM tokens one input becomes, by the name both families share (an input here is an image)."""
        return self.num_image_tokens

    def get_text_config(self, *args, **kwargs) -> LlamaConfig:
        return self.text_config


@strict
class OneLLMTokenizerConfig(PreTrainedConfig):
    """OneLLM's modality tokenizers: what each non-image input becomes before CLIP (paper appendix C.1).

    Defaults are the release's (official `onellm.py`, `Transformer.__init__` and `encode_image`, and
    the loaders in `data/`). Every tokenizer outputs CLIP's width; CLIP's class token is prepended after.
    """

    model_type = "onellm_tokenizer"
    base_config_key = "tokenizer_config"

    audio_num_mel_bins: int = 128
    """Mel bins of the kaldi fbank (the spectrogram's height); audio enters as `(N, 1, mel_bins, frames)`."""
    audio_num_frames: int = 1024
    """Spectrogram frames at a 10 ms shift, padded or cropped to this (10.24 s; the spectrogram's width)."""
    audio_patch_size: int = 16
    """Kernel of the audio `Conv2d(1, width)`, square."""
    audio_patch_stride: int = 10
    """Stride of the audio `Conv2d`, both axes (patches overlap by 6): 128 x 1024 gives 12 x 101 tokens."""
    point_num_groups: int = 1024
    """Centres picked by farthest point sampling, one token each (the paper says 512; the release uses 1024)."""
    point_group_size: int = 32
    """Nearest neighbours grouped around each centre (the centre included), max-pooled into its token."""
    point_num_features: int = 6
    """Features per point: xyz then rgb, as PointLLM's `*_8192.npy` files and `pc_norm` lay them out."""
    point_sample_on: Literal["xyz", "rgb"] = "xyz"
    """Columns the centres and neighbours are chosen on: "xyz" (0:3) or "rgb" (3:6). The release's
    `PointPatchEmbed` reads `x[:, :, 3:]`, which under `pc_norm`'s layout are the colours: its centres are
    spread over colour space and its "neighbourhoods" are points of similar colour anywhere on the object.
    Its weights were trained that way, so loading them needs "rgb"; a new model should group on geometry,
    hence "xyz" by default. Either way every point's 6 features go into the groups."""
    imu_num_channels: int = 6
    """IMU channels (accelerometer and gyroscope, 3 axes each); IMU enters as `(N, channels, samples)`."""
    imu_num_samples: int = 400
    """Samples per window: 2 s at 200 Hz (the release's 392-row position table implies it; the paper says 2000)."""
    imu_kernel_size: int = 10
    """Kernel of the IMU `Conv1d(channels, width, bias=False)`."""
    imu_stride: int = 1
    """Stride of the IMU `Conv1d`: 400 samples give 391 tokens."""
    fmri_num_voxels: int = 15724
    """Voxels of the NSD `nsdgeneral` mask (subject 1); fMRI enters as `(N, 1, voxels)`."""
    fmri_num_tokens: int = 8
    """Tokens of the fMRI `Linear(voxels, num_tokens * width)` (a `Linear`, not the paper's Conv1D to 8196)."""
    video_num_frames: int = 15
    """Frames per video: 5 clips of 1 frame x 3 spatial crops; CLIP's features are averaged over them."""
    rgbx_num_frames: int = 2
    """Frames of an rgbd / rgbn input: the RGB image and its depth or normal map, averaged after CLIP like video."""

    @property
    def audio_grid(self) -> tuple[int, int]:
        """Audio patches along the mel axis and the time axis (12 x 101 for the release)."""

        def patches(length: int) -> int:
            return (length - self.audio_patch_size) // self.audio_patch_stride + 1

        return patches(self.audio_num_mel_bins), patches(self.audio_num_frames)

    def num_tokens(self, modality: str, clip_grid_size: int | None = None) -> int:
        """Tokens `modality` puts into CLIP, before its class token (its position table has one row more).

        Args:
            modality: One of `ONELLM_MODALITIES`.
            clip_grid_size: CLIP's patches along one side; needed for image, video, rgbd and rgbn, whose
                frames go through CLIP's own patch embedding (and whose tokens are averaged over frames).
        """
        if modality in ONELLM_PIXEL_MODALITIES:
            if clip_grid_size is None:
                raise ValueError(f"the number of {modality} tokens is CLIP's patch grid: pass clip_grid_size")
            return clip_grid_size * clip_grid_size
        if modality == "audio":
            rows, cols = self.audio_grid
            return rows * cols
        if modality == "point":
            return self.point_num_groups
        if modality == "imu":
            return (self.imu_num_samples - self.imu_kernel_size) // self.imu_stride + 1
        if modality == "fmri":
            return self.fmri_num_tokens
        raise ValueError(f"unknown OneLLM modality {modality!r}; expected one of {ONELLM_MODALITIES}")

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # `from __future__ import annotations` leaves @strict unable to check a Literal, hence by hand.
        if self.point_sample_on not in ("xyz", "rgb"):
            raise ValueError(f'tokenizer_config.point_sample_on must be "xyz" or "rgb", got {self.point_sample_on!r}')
        shortest = min(self.audio_num_mel_bins, self.audio_num_frames)
        if shortest < self.audio_patch_size:
            raise ValueError(
                f"tokenizer_config: the audio spectrogram ({self.audio_num_mel_bins} x {self.audio_num_frames}) "
                f"must be at least audio_patch_size ({self.audio_patch_size}) along each axis"
            )
        if self.imu_num_samples < self.imu_kernel_size:
            raise ValueError(
                f"tokenizer_config.imu_num_samples ({self.imu_num_samples}) must be at least "
                f"imu_kernel_size ({self.imu_kernel_size})"
            )
        needed = 6 if self.point_sample_on == "rgb" else 3
        if self.point_num_features < needed:
            raise ValueError(
                f"tokenizer_config.point_num_features ({self.point_num_features}) must be at least {needed} "
                f"to sample on {self.point_sample_on!r}"
            )


@strict
class OneLLMProjectionConfig(PreTrainedConfig):
    """OneLLM's universal projection module: shared experts, per-modality tokens, routers and projections.

    Paper section 3.1, Eq. 1-2; official `onellm.py` (`resample_layers`, `routers`, `resample_tokens`,
    `clip_proj1`, `clip_proj2`, `start_tag`, `end_tag`). Defaults are the release's.
    """

    model_type = "onellm_projection"
    base_config_key = "projection_config"

    num_experts: int = 3
    """Projection experts K, shared by every modality and mixed by each modality's router."""
    num_hidden_layers: int = 8
    """LLaMA-style blocks per expert."""
    hidden_size: int = 1024
    """Width of the experts (the release sets it to CLIP's width)."""
    num_attention_heads: int = 16
    """Attention heads per expert block (non-causal, no RoPE)."""
    intermediate_size: int = 2816
    """Inner width of each block's SwiGLU: LLaMA's rule int(2/3 * 4 * 1024) rounded up to a multiple of 256."""
    rms_norm_eps: float = 1e-5
    """Epsilon of the blocks' RMSNorms (the release passes LLaMA-2-7B's `norm_eps`, 1e-5, to the experts)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of the LayerNorms after the input and output projections (PyTorch's default in the release)."""
    num_modality_tokens: int = 30
    """Learnable modality tokens per modality; each input becomes this many LLM tokens (plus two tags)."""
    router_hidden_size: int = 4096
    """Hidden width of each modality's router MLP (Linear, GELU, Linear to num_experts), 4x CLIP's width."""
    router_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    """How router logits become expert weights: "sigmoid" then divided by the sum over experts (the
    release), or "softmax" over experts (the paper's Eq. 2). Both sum to 1 over experts for each token."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.router_activation not in ("sigmoid", "softmax"):
            raise ValueError(
                f'projection_config.router_activation must be "sigmoid" or "softmax", got {self.router_activation!r}'
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"projection_config.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_experts < 1 or self.num_modality_tokens < 1:
            raise ValueError(
                f"projection_config needs at least one expert and one modality token, got "
                f"num_experts={self.num_experts}, num_modality_tokens={self.num_modality_tokens}"
            )


def check_onellm_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """`modalities` as a tuple, if they are distinct names from `ONELLM_MODALITIES`.

    Raises:
        ValueError: Naming the list and the unknown names, if any.
    """
    unknown = [m for m in modalities if m not in ONELLM_MODALITIES]
    if unknown or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"modalities must be distinct names from {ONELLM_MODALITIES}, got {list(modalities)}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(modalities)


ONELLM_VISION_DEFAULTS = {"image_size": 224, "layer_norm_eps": 1e-5}
"""Where OneLLM's CLIP differs from `Owl2VisionConfig`'s defaults: the release runs open_clip's ViT-L/14 at 224 px,
whose LayerNorms keep PyTorch's epsilon."""

ONELLM_TEXT_DEFAULTS = {"rms_norm_eps": 1e-5}
"""Where LLaMA-2-7B (the release's `config/llama2/7B.json`) differs from `LlamaConfig`'s defaults."""


@strict
class OneLLMConfig(PreTrainedConfig):
    """OneLLM: modality tokenizers -> universal encoder (CLIP) -> universal projection -> LLaMA-2.

    Paper section 3; official `model/LLM/onellm.py` (`Transformer`) and `model/meta.py`. Defaults are the
    release's; a sub-config given as a partial dict starts from them too (`ONELLM_VISION_DEFAULTS`,
    `ONELLM_TEXT_DEFAULTS`). Each input of modality m becomes `num_tokens_per_input` LLM tokens where
    `input_ids` hold `modality_token_index[m]`.

    Example:
        >>> from owl2 import OneLLMConfig, OneLLMModel
        >>> config = OneLLMConfig.from_json_file("configs/model/onellm-toy.json")
        >>> model = OneLLMModel(config)
    """

    model_type = "onellm"
    sub_configs_defaults = {
        "vision_config": Owl2VisionConfig,
        "tokenizer_config": OneLLMTokenizerConfig,
        "projection_config": OneLLMProjectionConfig,
        "text_config": LlamaConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    """The universal encoder's CLIP ViT (`Owl2VisionConfig`; ViT-L/14 at 224 px by default)."""
    tokenizer_config: dict | PreTrainedConfig | None = None
    """The modality tokenizers in front of CLIP (`OneLLMTokenizerConfig`)."""
    projection_config: dict | PreTrainedConfig | None = None
    """The universal projection module (`OneLLMProjectionConfig`)."""
    text_config: dict | PreTrainedConfig | None = None
    """The LLM (`LlamaConfig`), unchanged by OneLLM: LLaMA-2-7B by default."""
    modalities: list[str] | tuple[str, ...] | None = None
    """The modalities the model is built for, from `ONELLM_MODALITIES` (default: all eight, the release's order)."""
    modality_token_index: dict[str, int] | None = None
    """Placeholder id in `input_ids` for one input of each modality in `modalities`: negative, one per modality
    (default: `ONELLM_MODALITY_TOKEN_INDEX`, image -200 to imu -207)."""
    tie_word_embeddings: bool = False
    """LLaMA-2 keeps separate input embeddings and LM head."""

    def __post_init__(self, **kwargs):
        for key, defaults in (("vision_config", ONELLM_VISION_DEFAULTS), ("text_config", ONELLM_TEXT_DEFAULTS)):
            given = getattr(self, key)
            if not isinstance(given, PreTrainedConfig):
                setattr(self, key, {**defaults, **(given or {})})
        super().__post_init__(**kwargs)
        given = ONELLM_MODALITIES if self.modalities is None else self.modalities
        self.modalities = list(check_onellm_modalities(given))
        if self.modality_token_index is None:
            self.modality_token_index = {m: ONELLM_MODALITY_TOKEN_INDEX[m] for m in self.modalities}
        self._check_modality_token_index()

    def _check_modality_token_index(self) -> None:
        ids = self.modality_token_index
        unknown = [m for m in ids if m not in ONELLM_MODALITIES]
        if unknown:
            raise ValueError(
                f"modality_token_index names unknown modalities {unknown}; expected names from {ONELLM_MODALITIES}"
            )
        missing = [m for m in self.modalities if m not in ids]
        unused = [m for m in ids if m not in self.modalities]
        if missing or unused:
            raise ValueError(
                f"modality_token_index must give one id to each of modalities {self.modalities}, got {ids}"
                + (f" (missing: {missing})" if missing else "")
                + (f" (not in modalities: {unused})" if unused else "")
            )
        positive = {m: i for m, i in ids.items() if i >= 0}
        if positive:
            raise ValueError(f"modality_token_index ids must be negative (outside the vocabulary), got {positive}")
        by_id: dict[int, list[str]] = {}
        for modality, index in ids.items():
            by_id.setdefault(index, []).append(modality)
        shared = {index: names for index, names in by_id.items() if len(names) > 1}
        if shared:
            raise ValueError(f"modality_token_index gives one placeholder id to several modalities: {shared}")

    @property
    def num_tokens_per_input(self) -> int:
        """LLM tokens one input becomes: its start tag, the projected modality tokens, its end tag."""
        return self.projection_config.num_modality_tokens + 2

    def get_text_config(self, *args, **kwargs) -> LlamaConfig:
        return self.text_config
