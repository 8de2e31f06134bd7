"""OneLLM's "Image Init" (arXiv 2312.03700, section 3.3): new modalities start from the image's projection parts.

Before progressive multimodal alignment, the paper initialises each new modality's part of the universal
projection module from the image's, trained in stage I. `init_from_image` copies, for each listed modality m:

    projection.modality_tokens.image   -> projection.modality_tokens.{m}     (1, Q, H)
    projection.in_proj.image.*         -> projection.in_proj.{m}.*           linear and LayerNorm
    projection.routers.image.*         -> projection.routers.{m}.*           fc1, fc2
    projection.out_proj.image.*        -> projection.out_proj.{m}.*          linear and LayerNorm
    projection.start_tags.image        -> projection.start_tags.{m}          (1, 1, D_llm)
    projection.end_tags.image          -> projection.end_tags.{m}            (1, 1, D_llm)

so that a new modality's CLIP features are at first projected exactly as an image's are. The experts are
shared by all modalities already: nothing to copy. The tokenizers (`encoder.tokenizers.{m}`) and position
tables (`encoder.pos_embeds.{m}`) of audio, point, imu and fmri cannot be copied: the image has neither (it
uses CLIP's patch embedding and position table, whose shapes differ), so they keep their initialisation.

The release's `--init_from_image` (`main_pretrain.py:180`) copies `llma.resample_layers.image.*` and the
image's queries, projections and tags from a checkpoint, but the released model has no `image` expert
(its experts are keyed "0".."K-1") and every checkpoint it writes already holds every modality's parameters,
so with the shipped code the new modalities start from their random initialisation. This module does what
the paper describes, in place, on a built model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from owl2.models.onellm import OneLLMModel
from owl2.models.upm import UniversalProjection

IMAGE = "image"

COPIED: tuple[str, ...] = ("modality_tokens", "in_proj", "routers", "out_proj", "start_tags", "end_tags")
"""The per-modality members of `UniversalProjection` that Image Init copies (each a ParameterDict or ModuleDict)."""


def _projection(model: OneLLMModel | UniversalProjection) -> UniversalProjection:
    projection = model.projection if isinstance(model, OneLLMModel) else model
    if not isinstance(projection, UniversalProjection):
        raise TypeError(f"init_from_image: expected a OneLLMModel or a UniversalProjection, got {type(model).__name__}")
    return projection


@torch.no_grad()
def init_from_image(model: OneLLMModel | UniversalProjection, modalities: Sequence[str]) -> list[str]:
    """Copy the image's modality tokens, projections, router and tags into each of `modalities`, in place.

    The copies are independent tensors (each target keeps its own parameter, dtype and device); only the
    listed modalities change, so the outputs for images are unchanged.

    Args:
        model: A `OneLLMModel` (or its `UniversalProjection`) built with the image and `modalities`.
        modalities: The modalities to initialise, e.g. `["video", "audio", "point"]` before stage II.

    Returns:
        The names of the parameters written, relative to the projection module (e.g. `routers.audio.fc1.weight`).

    Raises:
        ValueError: If `modalities` names the image, repeats a modality, or names one the model was not built
            for (named), or if the model has no image.
    """
    projection = _projection(model)
    built = projection.modalities
    if IMAGE not in built:
        raise ValueError(f"init_from_image: the model was built for {built}, without {IMAGE!r} to copy from")
    unknown = [m for m in modalities if m not in built]
    if unknown:
        raise ValueError(f"init_from_image: modalities {unknown} are not among the model's {built}")
    if IMAGE in modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"init_from_image: expected distinct modalities other than {IMAGE!r}, got {list(modalities)}")
    written = []
    for member in COPIED:
        table = getattr(projection, member)
        for modality in modalities:
            source, target = table[IMAGE], table[modality]
            if isinstance(source, nn.Parameter):
                target.copy_(source)
                written.append(f"{member}.{modality}")
                continue
            targets = dict(target.named_parameters())
            for name, param in source.named_parameters():
                targets[name].copy_(param)
                written.append(f"{member}.{modality}.{name}")
    if not projection.training:
        projection.precompute_router()  # the copied routers' tables, as eval mode keeps them
    return written


__all__ = ["init_from_image"]
