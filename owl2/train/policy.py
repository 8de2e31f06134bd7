"""Stage policies: which parameters train in each stage of the recipe (paper section 3.3, "Training Paradigm").

Stage 1 (pre-training) trains the vision encoder, the visual abstractor and the vision side of the
modality-adaptive module (image K/V projections and image norms) while the rest of the language
model stays frozen, so text-only outputs cannot change. Stage 2 (joint instruction tuning) trains
the whole model. The official code expresses this with flags (`tune_visual_abstractor`,
`freeze_vision_model`) and branches; here a policy is a list of globs over parameter names,
applied to the model from outside.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

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
"""Stage name -> globs of the parameters that train; every other parameter is frozen."""


def matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether a parameter name matches any glob (`fnmatch`, case-sensitive; `*` also crosses dots)."""
    return any(fnmatchcase(name, p) for p in patterns)


def trainable_patterns(stage: str, override: list[str] | None = None) -> tuple[str, ...]:
    """The globs in force: `override` if given, else the stage's default.

    Raises:
        ValueError: If `stage` is unknown.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {sorted(STAGES)}, got {stage!r}")
    return tuple(override) if override is not None else STAGES[stage]


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
