"""Folder-to-folder conversions: official release <-> owl2, and LLaMA-2 + CLIP -> a fresh owl2 model.

Each conversion streams the source one shard at a time through a pure key map (`official`, `llama`,
`clip`), checks every key and shape against what the target model expects (`KeyCheck`), and writes bounded
shards into a temporary folder renamed into place when complete (`io`). Peak memory is about one
input shard plus one output shard. OneLLM's conversions (`convert_onellm`) reuse `KeyCheck`, `map_shard`
and `progress_bar`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig

from owl2.checkpoint.clip import clip_config_to_owl2, clip_to_owl2
from owl2.checkpoint.io import (
    DEFAULT_MAX_SHARD_BYTES,
    CheckpointError,
    ShardedWriter,
    WeightsFormat,
    atomic_folder,
    iter_shards,
    load_state_dict,
    read_config,
    weight_files,
)
from owl2.checkpoint.llama import llama_to_owl2
from owl2.checkpoint.official import (
    is_official_config,
    official_config_to_owl2,
    official_to_owl2,
    owl2_config_to_official,
    owl2_to_official,
)
from owl2.config import Owl2AbstractorConfig, Owl2Config

if TYPE_CHECKING:
    from owl2.models.owl2 import Owl2Model

ABSTRACTOR_FFN_RATIO = 2816 / 1024
"""Inner width of the abstractor's SwiGLU per unit of width (the official 2816 at width 1024)."""

_MAX_LISTED = 10


def _meta_state_dict(config: Owl2Config) -> dict[str, torch.Tensor]:
    from owl2.models.owl2 import Owl2Model  # only to read the target's keys and shapes, on the meta device

    with torch.device("meta"):
        return Owl2Model(config).state_dict()


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


class KeyCheck:
    """Checks tensors against the keys and shapes a target expects, as they stream past.

    Args:
        expected: The target's tensors (meta tensors will do: only the shapes are read).
        target: What the target is, for the messages (e.g. "Owl2Model").
    """

    def __init__(self, expected: Mapping[str, torch.Tensor], target: str):
        self.shapes = {key: tuple(tensor.shape) for key, tensor in expected.items()}
        self.target = target
        self.seen: set[str] = set()

    def __call__(self, converted: Mapping[str, torch.Tensor], source: Path | str) -> None:
        unexpected = [key for key in converted if key not in self.shapes]
        if unexpected:
            raise CheckpointError(f"{source}: keys that {self.target} does not have: {_listing(unexpected)}")
        for key, tensor in converted.items():
            if tuple(tensor.shape) != self.shapes[key]:
                raise CheckpointError(
                    f"{source}: {key} has shape {tuple(tensor.shape)}, {self.target} expects {self.shapes[key]}"
                )
        self.seen.update(converted)

    def finish(self, source: Path | str) -> None:
        missing = set(self.shapes) - self.seen
        if missing:
            raise CheckpointError(f"{source}: missing weights for {self.target}: {_listing(missing)}")


def map_shard(convert: Callable[..., Any], shard: Mapping[str, torch.Tensor], path: Path | str, *args) -> Any:
    """`convert(shard, *args)`, its KeyError (a key the map does not know) raised as a CheckpointError naming `path`."""
    try:
        return convert(shard, *args)
    except KeyError as error:
        raise CheckpointError(f"{path}: {error.args[0]}") from error


def _dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


def progress_bar(total: int, description: str, enabled: bool, unit: str = "shard") -> tqdm:
    """A tqdm bar over `total` units, silent unless `enabled`."""
    return tqdm(total=total, desc=description, unit=unit, disable=not enabled)


# -- official -> owl2 ---------------------------------------------------------------------------------
def convert_official(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert an official mPLUG-Owl2 folder into an `Owl2Model` folder (safetensors), shard by shard.

    Raises:
        CheckpointError: unreadable shard, unknown, missing or misshapen keys (named in the message).
    """
    source, destination = Path(source), Path(destination)
    config = official_config_to_owl2(read_config(source))
    check = KeyCheck(_meta_state_dict(config), "Owl2Model")
    files = weight_files(source)
    with atomic_folder(destination, overwrite) as staging, ShardedWriter(staging, max_shard_bytes) as writer:
        with progress_bar(len(files), "official -> owl2", progress) as bar:
            for path, shard in iter_shards(source):
                converted = map_shard(official_to_owl2, shard, path, config)
                check(converted, path)
                writer.add(converted)
                del shard, converted
                bar.update()
        check.finish(source)
        config.save_pretrained(staging)
    return destination


# -- owl2 -> official ---------------------------------------------------------------------------------
def export_official(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    weights_format: WeightsFormat = "safetensors",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write an `Owl2Model` folder in the official layout (config.json with `visual_config`, official keys).

    The abstractor's `q_pos_embed`/`k_pos_embed` buffers are written as the official code computes them.
    """
    source, destination = Path(source), Path(destination)
    config = Owl2Config.from_pretrained(source)
    check = KeyCheck(owl2_to_official(_meta_state_dict(config), config), "the official model")
    files = weight_files(source)
    dtype = None
    with atomic_folder(destination, overwrite) as staging:
        with ShardedWriter(staging, max_shard_bytes, weights_format) as writer:
            with progress_bar(len(files), "owl2 -> official", progress) as bar:
                for path, shard in iter_shards(source):
                    converted = map_shard(owl2_to_official, shard, path, config)
                    check(converted, path)
                    if dtype is None and converted:
                        dtype = next(iter(converted.values())).dtype
                    writer.add(converted)
                    del shard, converted
                    bar.update()
            check.finish(source)
        official = owl2_config_to_official(config)
        official["torch_dtype"] = _dtype_name(dtype)
        (staging / "config.json").write_text(json.dumps(official, indent=2, sort_keys=True) + "\n")
    return destination


# -- LLaMA-2 + CLIP -> owl2 ---------------------------------------------------------------------------
def init_config(
    llama_config: Mapping[str, Any], clip_config: Mapping[str, Any], abstractor: Mapping[str, Any] | None = None
) -> Owl2Config:
    """The `Owl2Config` of a model started from a LLaMA (config.json dict) and a CLIP (vision or full config dict).

    The abstractor gets the official defaults sized to the CLIP width: width and heads of the ViT,
    SwiGLU inner width `ABSTRACTOR_FFN_RATIO` times the width; `abstractor` overrides any field.
    """
    text = LlamaConfig.from_dict(dict(llama_config))
    if text.model_type != "llama":
        raise ValueError(f"expected a LLaMA config (model_type 'llama'), got model_type {text.model_type!r}")
    text.tie_word_embeddings = False  # owl2 keeps its own LM head (a copy of tied embeddings)
    vision = clip_config_to_owl2(clip_config)
    abstractor_fields = {
        "hidden_size": vision.hidden_size,
        "num_attention_heads": vision.num_attention_heads,
        "intermediate_size": round(vision.hidden_size * ABSTRACTOR_FFN_RATIO),
        **(abstractor or {}),
    }
    return Owl2Config(
        vision_config=vision.to_dict(),
        abstractor_config=Owl2AbstractorConfig(**abstractor_fields).to_dict(),
        text_config=text.to_dict(),
    )


def fresh_abstractor(config: Owl2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A newly initialised abstractor's `abstractor.*` tensors, drawn as `Owl2Model._init_weights` draws them."""
    from owl2.models.abstractor import VisualAbstractor
    from owl2.models.owl2 import Owl2Model

    with torch.device("meta"):
        host = Owl2Model(config)  # lends its _init_weights (and config); no real tensors
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        abstractor = VisualAbstractor(config.abstractor_config, config.text_config.hidden_size)
        abstractor.apply(host._init_weights)
    return {f"abstractor.{key}": tensor.detach() for key, tensor in abstractor.state_dict().items()}


def init_from_llama_clip(
    llama_folder: str | os.PathLike,
    clip_folder: str | os.PathLike,
    destination: str | os.PathLike,
    abstractor: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Start an `Owl2Model` folder from a `LlamaForCausalLM` folder and a `CLIPVisionModel`/`CLIPModel` folder.

    Both modality branches of the decoder get the LLaMA weights, the ViT gets CLIP's, the abstractor
    is freshly initialised (seeded). LLaMA streams shard by shard; the CLIP tower is read whole.
    """
    llama_folder, clip_folder, destination = Path(llama_folder), Path(clip_folder), Path(destination)
    llama_config = read_config(llama_folder)
    config = init_config(llama_config, read_config(clip_folder), abstractor)
    tied = bool(llama_config.get("tie_word_embeddings", False))
    check = KeyCheck(_meta_state_dict(config), "Owl2Model")
    files = weight_files(llama_folder)
    with atomic_folder(destination, overwrite) as staging, ShardedWriter(staging, max_shard_bytes) as writer:
        vision = map_shard(clip_to_owl2, load_state_dict(clip_folder), clip_folder)
        check(vision, clip_folder)
        writer.add(vision)
        del vision
        fresh = fresh_abstractor(config, seed)
        check(fresh, "fresh abstractor")
        writer.add(fresh)
        with progress_bar(len(files), "LLaMA -> owl2", progress) as bar:
            for path, shard in iter_shards(llama_folder):
                converted = map_shard(llama_to_owl2, shard, path)
                if tied and "language_model.embed_tokens.weight" in converted:
                    converted.setdefault("lm_head.weight", converted["language_model.embed_tokens.weight"].clone())
                check(converted, path)
                writer.add(converted)
                del shard, converted
                bar.update()
        check.finish(f"{llama_folder} + {clip_folder}")
        config.save_pretrained(staging)
    return destination


# -- loading an official folder directly --------------------------------------------------------------
def is_official_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a local folder whose config.json is the official release's (`model_type` "mplug_owl2")."""
    path = Path(folder) / "config.json"
    return path.is_file() and is_official_config(read_config(folder))


def load_official_model(
    folder: str | os.PathLike,
    model_class: type[Owl2Model] | None = None,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
) -> Owl2Model:
    """An `Owl2Model` (eval mode) with the weights of an official folder, converted in memory.

    Used by `Owl2Model.from_pretrained` when pointed at an official folder. Holds the converted weights
    and the model at once; for the 7B release, converting once with `convert_official` is lighter.
    """
    if model_class is None:
        from owl2.models.owl2 import Owl2Model as model_class
    folder = Path(folder)
    config = official_config_to_owl2(read_config(folder))
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    check = KeyCheck(_meta_state_dict(config), "Owl2Model")
    state_dict: dict[str, torch.Tensor] = {}
    for path, shard in iter_shards(folder):
        converted = map_shard(official_to_owl2, shard, path, config)
        check(converted, path)
        state_dict.update(converted)
    check.finish(folder)
    model = model_class(config)
    model.load_state_dict(state_dict, strict=True)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()
