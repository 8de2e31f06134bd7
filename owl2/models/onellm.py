"""OneLLM end to end (arXiv 2312.03700, section 3; official `model/LLM/onellm.py`, `Transformer`, and `model/meta.py`).

inputs of eight modalities -> modality tokenizers -> universal encoder (CLIP) -> universal projection ->
`[start_m; 30 modality tokens; end_m]` per input, spliced where `input_ids` hold modality m's placeholder
-> LLaMA-2, unchanged -> logits and loss. Inputs, one tensor per modality, in order of appearance:

    image        (N, 3, H, W)          audio   (N, 1, mel bins, frames)
    video        (N, T, 3, H, W)       point   (N, points, 6)
    rgbd, rgbn   (N, 2, 3, H, W)       imu     (N, 6, samples)
                                       fmri    (N, 1, voxels)

The prompt `[BOS, placeholder, text...]` gives the release's sequence `[BOS, start, 30 tokens, end, text...]`,
and its logits from the end tag on are the release's (`h[:, prefix_len:]`). Unlike the release, a sample
may hold any number of inputs of any modalities anywhere in its text (the release reads one modality per
batch, right after BOS), batches may be padded on either side, labels skip IGNORE_INDEX (the release skips
token id 0), and the KV cache counts every spliced position (the release's `forward_inference` counts 30 of
the 32, so from the second decoding step on its positions and cache slots are two short).
The splice, positions, padding, cache and generation plumbing are `owl2.models.multimodal`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, LlamaModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.utils.deprecation import deprecate_kwarg

from owl2.config import OneLLMConfig, OneLLMProjectionConfig, OneLLMTokenizerConfig
from owl2.constants import ONELLM_MODALITIES
from owl2.models.multimodal import (
    TEXT_MODALITY_ID,
    ModalityTokens,
    MultimodalCausalLMOutput,
    MultimodalGenerationMixin,
    MultimodalPreTrainedModel,
)
from owl2.models.universal_encoder import UniversalEncoder
from owl2.models.upm import UniversalProjection
from owl2.models.vision import ClipVisionTransformer


def _pytorch_default_init(layer: nn.Linear | nn.Conv1d | nn.Conv2d) -> None:
    """PyTorch's own initialisation of a linear or convolution (its `reset_parameters`), through transformers'
    init functions, which skip tensors already loaded."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.weight[0].numel())  # 1 / sqrt(fan_in)
        init.uniform_(layer.bias, -bound, bound)


@dataclass(frozen=True)
class ReleaseInit:
    """Which layers of the encoder and the projection module start as the release's constructor leaves them.

    transformers' init pass hands `_init_weights` only modules that hold parameters themselves (for models
    defined outside the library), never the containers (an expert, a router, the encoder), so the layers
    and tables are listed here, once, when the model is built.
    """

    xavier: frozenset[nn.Module]
    """The experts' linears: Xavier-uniform, the release's `default_linear_init`."""
    pytorch_default: frozenset[nn.Module]
    """The tokenizers, routers and input / output projections: left at PyTorch's default in the release."""
    free: dict[nn.Module, UniversalEncoder | UniversalProjection]
    """Each table of free parameters (position tables, modality tokens, tags) -> the part that initialises it."""

    @classmethod
    def of(cls, encoder: UniversalEncoder, projection: UniversalProjection) -> ReleaseInit:
        xavier = {m for expert in projection.experts for m in expert.modules() if isinstance(m, nn.Linear)}
        default = [tokenizer.proj for tokenizer in encoder.tokenizers.values()]
        default += [p.linear for p in (*projection.in_proj.values(), *projection.out_proj.values())]
        default += [fc for router in projection.routers.values() for fc in (router.fc1, router.fc2)]
        tables = {projection.modality_tokens: projection, projection.start_tags: projection}
        tables |= {projection.end_tags: projection, encoder.pos_embeds: encoder}
        return cls(frozenset(xavier), frozenset(default), tables)


class OneLLMPreTrainedModel(MultimodalPreTrainedModel):
    config_class = OneLLMConfig
    base_model_prefix = "onellm"
    input_modalities = ("text", *ONELLM_MODALITIES)
    _no_split_modules = ["LlamaDecoderLayer", "ExpertBlock", "Block"]

    release_init: ReleaseInit
    """Set by the model before `post_init`."""

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The release's initialisation of what it trains from scratch; transformers' LLaMA init elsewhere.

        The release starts LLaMA-2 and CLIP from pretrained weights; fresh, their linears and embeddings
        are drawn from normal(0, text `initializer_range`) and CLIP's free parameters as timm draws them.
        The rest starts as the release's constructor leaves it (`ReleaseInit`): the experts' linears
        Xavier-uniform; the tokenizers, routers and projections at PyTorch's default; position tables and
        modality tokens N(0, 0.02) and start / end tags U[0, 1) (`init_free_parameters`); norms at 1 and 0.
        """
        super()._init_weights(module)
        if module in self.release_init.xavier:
            init.xavier_uniform_(module.weight)
        elif module in self.release_init.pytorch_default:
            _pytorch_default_init(module)
        elif module in self.release_init.free:
            # Per visited table, its part's whole `init_free_parameters`: flag-aware, so loaded tables keep their
            # values; the part's fresh tables are drawn once per visit (a few thousand numbers each).
            self.release_init.free[module].init_free_parameters()
        elif isinstance(module, ClipVisionTransformer):
            module.init_free_parameters()


class OneLLMModel(OneLLMPreTrainedModel, MultimodalGenerationMixin):
    """OneLLM as a transformers causal LM.

    `input_ids` hold `config.modality_token_index[m]` once per input of modality m; `modality_inputs` maps
    each modality given to its inputs, in order of appearance across the batch (row-major). Each placeholder
    becomes `config.num_tokens_per_input` tokens and the returned logits cover that expanded sequence.
    In eval mode the routers' weights, which depend on no input, come from a table computed once.

    Example:
        >>> model = OneLLMModel(OneLLMConfig.from_json_file("configs/model/onellm-toy.json")).eval()
        >>> audio = model.config.modality_token_index["audio"]
        >>> out = model(torch.tensor([[1, audio, 5, 6]]), modality_inputs={"audio": torch.randn(1, 1, 24, 34)})
    """

    modality_inputs_name = "modality_inputs"

    def __init__(self, config: OneLLMConfig):
        super().__init__(config)
        text = config.text_config
        self.encoder = UniversalEncoder(config.vision_config, config.tokenizer_config, config.modalities)
        self.projection = UniversalProjection(
            config.projection_config, config.modalities, config.vision_config.hidden_size, text.hidden_size
        )
        self.language_model = LlamaModel(text)  # OneLLM leaves LLaMA unchanged: one branch, no routing
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.release_init = ReleaseInit.of(self.encoder, self.projection)
        self.post_init()

    # -- transformers plumbing ---------------------------------------------------------------------
    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        super()._set_gradient_checkpointing(enable, *args, **kwargs)
        self.encoder.clip.set_grad_checkpointing(enable)  # timm's own flag, which transformers does not know

    def train(self, mode: bool = True) -> OneLLMModel:
        """`nn.Module.train`; switching to eval mode also precomputes every modality's routing table."""
        super().train(mode)
        if not mode:
            self.projection.precompute_router()
        return self

    # -- modalities --------------------------------------------------------------------------------
    def encode_modality(self, inputs: torch.Tensor, modality: str) -> torch.Tensor:
        """Inputs of one modality (shapes in the module docstring) -> `(N, num_tokens_per_input, text_hidden)`.

        Each input's block: its start tag, the projected modality tokens, its end tag. The encoder checks
        the shape against the config and names the modality, the shape expected and the shape given.
        """
        return self.projection.embed_with_tags(self.encoder(inputs, modality), modality)

    # -- the hooks of MultimodalPreTrainedModel ----------------------------------------------------
    def placeholder_ids(self) -> dict[str, int]:
        return {m: self.config.modality_token_index[m] for m in self.config.modalities}

    def tokens_per_input(self) -> dict[str, int]:
        return dict.fromkeys(self.config.modalities, self.config.num_tokens_per_input)

    def embed_modality_inputs(self, modality_inputs: Mapping[str, torch.Tensor]) -> list[ModalityTokens]:
        modalities = self.config.modalities
        unknown = [m for m in modality_inputs if m not in modalities]
        if unknown:
            raise ValueError(f"modality_inputs holds {unknown}, but this model was built for {modalities}")
        # Every modality gets its entry, empty when none was given, so that a stray placeholder is counted.
        width, per_input = self.config.text_config.hidden_size, self.config.num_tokens_per_input
        blocks = []
        for index, modality in enumerate(modalities):
            if modality in modality_inputs:
                embeds = self.encode_modality(modality_inputs[modality], modality)
            else:
                embeds = self.lm_head.weight.new_empty(0, per_input, width)
            blocks.append(
                ModalityTokens(
                    name=modality,
                    placeholder=self.config.modality_token_index[modality],
                    modality_id=TEXT_MODALITY_ID + 1 + index,
                    embeds=embeds,
                    inputs=f"{modality} inputs",
                    source=f"modality_inputs[{modality!r}]",
                )
            )
        return blocks

    # -- forward -----------------------------------------------------------------------------------
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # transformers' own rename (5.24)
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        modality_inputs: Mapping[str, torch.Tensor] | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        padding_side: Literal["left", "right"] = "right",
        **kwargs,
    ) -> MultimodalCausalLMOutput:
        """Logits (and the loss, given `labels`) over the expanded sequence.

        Args:
            input_ids: `(B, T)` token ids with `config.modality_token_index[m]` once per input of modality m.
            attention_mask: `(B, T)` 1 for real tokens, 0 for padding; during cached generation, the mask
                over the cache plus the new tokens, as returned in the previous output's `attention_mask`.
                Packed rows number their samples 1, 2, 3, ...: attention is then blocked between samples.
            modality_inputs: modality -> its inputs, one per placeholder, in order of appearance across the
                batch (shapes in the module docstring); modalities without placeholders are left out.
            labels: `(B, T)` targets aligned with `input_ids` (shifted inside, as in transformers); spliced
                tokens are never targets.
            cache: the key/value cache of earlier steps; the output's `cache` is the one to pass on.
            padding_side: where rows shorter after expansion get their extra padding; generation uses "left".
        """
        return self.multimodal_forward(
            input_ids,
            attention_mask,
            modality_inputs or None,
            labels,
            cache,
            use_cache,
            logits_to_keep,
            padding_side,
            **kwargs,
        )


AutoConfig.register("onellm", OneLLMConfig)
AutoConfig.register("onellm_tokenizer", OneLLMTokenizerConfig)
AutoConfig.register("onellm_projection", OneLLMProjectionConfig)
AutoModel.register(OneLLMConfig, OneLLMModel)
AutoModelForImageTextToText.register(OneLLMConfig, OneLLMModel)

__all__ = ["OneLLMModel", "OneLLMPreTrainedModel"]
