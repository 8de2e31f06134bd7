"""AdamW parameter groups: no-decay set, layer-wise LR decay over the ViT, per-component multipliers
(paper section 4.1; official `mplug_owl2_trainer.py` `create_optimizer`; timm `param_groups_layer_decay`).

The official trainer splits parameters into decay / no-decay (and an abstractor-LR group). We add
timm's layer-wise LR decay over the vision blocks: the patch embedding, class token and position
table count as layer 0, block `i` as layer `i + 1`, the final norm as layer `depth + 1`, and a layer
`l` gets `layer_decay ** (depth + 1 - l)` of the LR; parameters outside the ViT get the full LR.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from torch import nn

from owl2.train.config import OptimConfig
from owl2.train.policy import matches

VISION_PREFIX = "vision_model."
_BLOCK = re.compile(r"^vision_model\.blocks\.(\d+)\.")


def vit_layer_id(name: str, depth: int) -> int | None:
    """timm's layer index of a ViT parameter (None for parameters outside the ViT)."""
    if not name.startswith(VISION_PREFIX):
        return None
    block = _BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    if name.startswith(("vision_model.norm.", "vision_model.fc_norm.", "vision_model.head")):
        return depth + 1
    return 0  # cls_token, pos_embed, patch_embed, norm_pre


def lr_scale(name: str, depth: int, optim: OptimConfig) -> float:
    """LR multiplier of one parameter: layer decay times the first matching component multiplier."""
    scale = 1.0
    layer = vit_layer_id(name, depth)
    if layer is not None:
        scale = optim.layer_decay ** (depth + 1 - layer)
    for pattern, multiplier in optim.lr_multipliers.items():
        if fnmatchcase(name, pattern):
            return scale * float(multiplier)
    return scale


def uses_weight_decay(name: str, ndim: int, optim: OptimConfig) -> bool:
    """Matrices decay; norms, biases (every 1-D parameter) and the `no_decay` globs do not."""
    return ndim > 1 and not matches(name, optim.no_decay)


def param_groups(model: nn.Module, optim: OptimConfig, vit_depth: int) -> list[dict]:
    """Trainable parameters grouped by (weight decay, LR scale), each group carrying its own `lr`.

    Args:
        model: The model after the stage policy set `requires_grad`.
        optim: The optimiser settings.
        vit_depth: Number of ViT blocks (`vision_config.num_hidden_layers`).

    Returns:
        Groups `{"name", "params", "weight_decay", "lr", "lr_scale"}` in a deterministic order;
        frozen parameters are left out.
    """
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = uses_weight_decay(name, param.ndim, optim)
        scale = lr_scale(name, vit_depth, optim)
        key = (decay, round(scale, 12))
        if key not in groups:
            groups[key] = {
                "name": f"{'decay' if decay else 'no_decay'}_x{scale:.6g}",
                "params": [],
                "weight_decay": optim.weight_decay if decay else 0.0,
                "lr": optim.lr * scale,
                "lr_scale": scale,
            }
        groups[key]["params"].append(param)
    return list(groups.values())
