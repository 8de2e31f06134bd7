"""Stage policies: which parameters train in each stage of the recipe, for both model families.

mPLUG-Owl2 (its paper, section 3.3, "Training Paradigm"), `STAGES`: stage 1 (pre-training) trains the
vision encoder, the visual abstractor and the vision side of the modality-adaptive module (image K/V
projections and image norms) while the rest of the language model stays frozen, so text-only outputs
cannot change. Stage 2 (joint instruction tuning) trains the whole model. The official code expresses
this with flags (`tune_visual_abstractor`, `freeze_vision_model`) and branches; here a policy is a list
of globs over parameter names, applied to the model from outside.

OneLLM (arXiv 2312.03700, section 3.3), `ONELLM_STAGES`, over `OneLLMModel`'s parameter names. CLIP
(`encoder.clip.*`) is frozen in every stage, and so is the LLM in the alignment stages, so an alignment
step cannot change text-only outputs:

    onellm_align(modalities)    image-text alignment (stage I: `["image"]`) and progressive multimodal
                                alignment (stage II: video, audio, point; stage III: rgbd, rgbn, imu, fmri).
                                Trains the shared experts and, for each listed modality, its UPM parts
                                (modality tokens, input / output projections, router, start / end tags)
                                and, for audio, point, imu and fmri, its tokenizer and position table.
                                Image, video, rgbd and rgbn enter CLIP through its own patch embedding,
                                which stays frozen, so they have no tokenizer that trains.
    onellm_instruct             unified instruction tuning as the paper states it: the LLM only.
    onellm_instruct_release     instruction tuning as the official code runs it: everything but CLIP
                                (the release freezes only CLIP, in every stage, alignment included).

A modality that is not listed in `onellm_align` stays frozen even when its data is in the batch (the
release mixes image batches into stages II and III against forgetting): list it to train it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from owl2.config import check_onellm_modalities
from owl2.constants import ONELLM_PIXEL_MODALITIES

STAGES: dict[str, tuple[str, ...]] = {
    "pretrain": (
        "vision_model.*",
        "abstractor.*",
        "language_model.layers.*.self_attn.k_proj.image.*",
        "language_model.layers.*.self_attn.v_proj.image.*",
        "language_model.layers.*.input_layernorm.image.*",
        "language_model.layers.*.post_attention_layernorm.image.*",
    ),
    "instruct": ("*",),
}
"""mPLUG-Owl2's stage name -> globs of the parameters that train; every other parameter is frozen."""

ONELLM_LLM: tuple[str, ...] = ("language_model.*", "lm_head.*")
"""OneLLM's LLaMA-2: the decoder (embeddings, layers, final norm) and the output head."""

ONELLM_EXPERTS: tuple[str, ...] = ("projection.experts.*",)
"""The UPM's projection experts, shared by every modality."""

ONELLM_MODALITY_PARTS: tuple[str, ...] = (
    "projection.modality_tokens.{m}",
    "projection.in_proj.{m}.*",
    "projection.routers.{m}.*",
    "projection.out_proj.{m}.*",
    "projection.start_tags.{m}",
    "projection.end_tags.{m}",
)
"""Each modality's own UPM parameters, `{m}` for the modality."""

ONELLM_TOKENIZER_PARTS: tuple[str, ...] = ("encoder.tokenizers.{m}.*", "encoder.pos_embeds.{m}")
"""The tokenizer and position table of a modality outside `ONELLM_PIXEL_MODALITIES` (audio, point, imu, fmri)."""


@dataclass(frozen=True)
class OneLLMStage:
    """One OneLLM stage as data: globs that train whatever the modalities, and whether each modality's own do."""

    shared: tuple[str, ...]
    """Globs that train in this stage independently of the modalities."""
    per_modality: bool
    """Whether each listed modality's UPM parts (and tokenizer, if it has one) train too."""

    def patterns(self, modalities: Sequence[str] = ()) -> tuple[str, ...]:
        """The stage's globs for `modalities` (the ones being aligned, or the model's, for the release variant).

        Raises:
            ValueError: If a modality is unknown or repeated, or if the stage trains modalities and none is given.
        """
        modalities = check_onellm_modalities(modalities)
        if not self.per_modality:
            return self.shared
        if not modalities:
            raise ValueError("modalities: this OneLLM stage trains per-modality parts; name at least one modality")
        own = []
        for m in modalities:
            parts = ONELLM_MODALITY_PARTS
            if m not in ONELLM_PIXEL_MODALITIES:
                parts += ONELLM_TOKENIZER_PARTS
            own += [p.format(m=m) for p in parts]
        return (*self.shared, *own)


ONELLM_STAGES: dict[str, OneLLMStage] = {
    "onellm_align": OneLLMStage(shared=ONELLM_EXPERTS, per_modality=True),
    "onellm_instruct": OneLLMStage(shared=ONELLM_LLM, per_modality=False),
    "onellm_instruct_release": OneLLMStage(shared=(*ONELLM_EXPERTS, *ONELLM_LLM), per_modality=True),
}
"""OneLLM's stage name -> its policy (see the module docstring); CLIP is frozen in all of them."""

STAGE_NAMES: tuple[str, ...] = (*STAGES, *ONELLM_STAGES)
"""Every stage name `trainable_patterns` accepts, both families."""


def onellm_align_patterns(modalities: Sequence[str]) -> tuple[str, ...]:
    """Globs of OneLLM's alignment stages: the shared experts and the listed modalities' own parts.

    Example:
        >>> onellm_align_patterns(["image"])[:3]  # stage I: image-text alignment
        ('projection.experts.*', 'projection.modality_tokens.image', 'projection.in_proj.image.*')
    """
    return ONELLM_STAGES["onellm_align"].patterns(modalities)


def matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether a parameter name matches any glob (`fnmatch`, case-sensitive; `*` also crosses dots)."""
    return any(fnmatchcase(name, p) for p in patterns)


def trainable_patterns(
    stage: str, override: list[str] | None = None, modalities: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The globs in force: `override` if given, else the stage's default.

    Args:
        stage: A name from `STAGES` (mPLUG-Owl2) or `ONELLM_STAGES` (OneLLM).
        override: Globs that replace the stage's default.
        modalities: For `onellm_align`, the modalities being aligned; for `onellm_instruct_release`, the
            model's (`config.modalities`). Ignored by `onellm_instruct`; not accepted by mPLUG-Owl2's stages.

    Raises:
        ValueError: If `stage` is unknown, if `modalities` is given to an mPLUG-Owl2 stage, or if a OneLLM
            stage that trains per-modality parts gets no modalities or an unknown one (named).
    """
    if stage in STAGES:
        if modalities is not None:
            raise ValueError(f"modalities: stage {stage!r} is mPLUG-Owl2's and takes none, got {list(modalities)}")
        return tuple(override) if override is not None else STAGES[stage]
    if stage in ONELLM_STAGES:
        if override is not None:
            return tuple(override)
        if modalities is None and ONELLM_STAGES[stage].per_modality:
            raise ValueError(f"modalities: stage {stage!r} needs the modalities it trains, got none")
        return ONELLM_STAGES[stage].patterns(modalities or ())
    raise ValueError(f"stage: expected one of {sorted(STAGE_NAMES)}, got {stage!r}")


def apply_policy(model: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Set `requires_grad` on every parameter from the globs: matched ones train, the rest freeze.

    Returns:
        The names of the trainable parameters.

    Raises:
        ValueError: If a glob matches no parameter (a typo would otherwise freeze a whole component).
    """
    names = [n for n, _ in model.named_parameters()]
    unused = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unused:
        raise ValueError(f"trainable: patterns {unused} match no parameter of {type(model).__name__}")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(matches(name, patterns))
        if param.requires_grad:
            trainable.append(name)
    return trainable
