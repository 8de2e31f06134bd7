"""Folder-to-folder conversions of OneLLM: the official release <-> a `OneLLMModel` folder (all offline).

The same machinery as `owl2.checkpoint.convert`: the release's one weight file is memory-mapped, checked
against the keys and shapes a release of the inferred configuration has, mapped key by key through the pure
maps of `owl2.checkpoint.onellm`, and written into bounded shards in a temporary folder renamed into place
when complete. The input's pages are file-backed (the kernel's page cache); the conversion itself holds
about one output shard.

A converted folder holds, besides config.json and the shards:

- the text tokenizer: transformers' files built from `tokenizer.model`, and `tokenizer.model` itself;
- `media_config.json`: the release's preprocessing sizes, so that `OneLLMProcessor.from_pretrained` loads the folder;
- `onellm_release.safetensors` (`RELEASE_EXTRAS`): what the release holds that `OneLLMModel` does not, so that
  `export_onellm` writes the release back exactly: the tensors the release never uses
  (`onellm.UNUSED_RELEASE_KEYS`: CLIP's `visual.proj`, the text tower's leftovers) and, as metadata, the text
  of `params.json` and whether the release file carried CLIP's weights.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaTokenizer
from transformers.utils import is_protobuf_available, is_sentencepiece_available

from owl2.checkpoint.convert import KeyCheck, map_shard, progress_bar
from owl2.checkpoint.io import (
    DEFAULT_MAX_SHARD_BYTES,
    CheckpointError,
    ShardedWriter,
    atomic_folder,
    iter_shards,
    load_file_weights,
    read_config,
    weight_files,
)
from owl2.checkpoint.meta_llama import params_from_llama_config
from owl2.checkpoint.onellm import (
    CLIP_PREFIX,
    PARAMS_FILE,
    TOKENIZER_FILE,
    UNUSED_RELEASE_KEYS,
    WEIGHTS_FILE,
    onellm_to_release,
    open_clip_to_release,
    release_config,
    release_to_onellm,
)
from owl2.config import OneLLMConfig
from owl2.processing.media.config import MediaConfig

RELEASE_EXTRAS = "onellm_release.safetensors"
"""The file of a converted folder that keeps what the release holds and `OneLLMModel` does not (module docstring)."""

_PARAMS_KEY, _CLIP_KEY = "params.json", "clip_in_release"  # metadata of RELEASE_EXTRAS


def _meta_state_dict(config: OneLLMConfig) -> dict[str, torch.Tensor]:
    from owl2.models.onellm import OneLLMModel  # only to read the target's keys and shapes, on the meta device

    with torch.device("meta"):
        return OneLLMModel(config).state_dict()


def _required_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {name} ({what})")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error


def text_tokenizer(folder: str | os.PathLike) -> LlamaTokenizer:
    """transformers' LLaMA tokenizer built from a folder's sentencepiece `tokenizer.model`.

    It adds BOS and no EOS, as the release's `Tokenizer.encode(bos=True, eos=False)` does for a prompt.

    Raises:
        CheckpointError: no `tokenizer.model`.
        ImportError: `sentencepiece` or `protobuf` (with which transformers reads the model) is not installed.
    """
    folder = Path(folder)
    path = _required_file(folder, TOKENIZER_FILE, "the sentencepiece model of the text tokenizer")
    if not (is_sentencepiece_available() and is_protobuf_available()):  # else transformers falls back to nothing
        raise ImportError(f"reading {path} needs the sentencepiece and protobuf packages: pip install owl2[convert]")

    return LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True, add_eos_token=False)


# -- release -> owl2 -------------------------------------------------------------------------------------
def convert_onellm(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    clip_config: str | os.PathLike | Mapping[str, Any] | None = None,
    clip_weights: str | os.PathLike | None = None,
    tokenizer_config: Mapping[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the official OneLLM folder into a `OneLLMModel` folder (safetensors shards, config, tokenizer).

    Args:
        source: The release: `consolidated.00-of-01.pth`, `params.json`, `tokenizer.model`.
        destination: The folder to write (`OneLLMModel.from_pretrained` loads it).
        clip_config: open_clip model config of the universal encoder, a JSON file or a dict
            (default: `onellm.OPEN_CLIP_VIT_L_14`, the release's).
        clip_weights: An open_clip CLIP state dict (`visual.*` keys; .pt/.bin/.safetensors), for a release file
            saved without CLIP (its loader takes CLIP from open_clip when building the model).
        tokenizer_config: Modality-tokenizer fields the weights cannot tell (`onellm.TOKENIZER_FIELDS_GIVEN`),
            when they differ from the release's.
        max_shard_bytes: Largest output shard.
        overwrite: Replace `destination` if it exists.
        progress: Show a progress bar.

    Raises:
        CheckpointError: a missing file, CLIP's weights absent, an unknown, missing or misshapen key, sizes that
            disagree (each named in the message).
    """
    source, destination = Path(source), Path(destination)
    params_path = _required_file(source, PARAMS_FILE, "the release's LLaMA params")
    weights_path = _required_file(source, WEIGHTS_FILE, "the release's weights")
    params = _read_json(params_path)
    if isinstance(clip_config, (str, os.PathLike)):
        clip_config = _read_json(Path(clip_config))
    tokenizer = text_tokenizer(source)

    release = load_file_weights(weights_path)  # memory-mapped
    clip_in_release = any(key.startswith(CLIP_PREFIX) for key in release)
    sources: dict[Path, dict[str, torch.Tensor]] = {weights_path: release}
    if clip_in_release and clip_weights is not None:
        raise CheckpointError(f"{weights_path} holds CLIP's weights ({CLIP_PREFIX}*) already: leave out clip_weights")
    if not clip_in_release:
        if clip_weights is None:
            raise CheckpointError(
                f"{weights_path}: CLIP's weights are missing (no {CLIP_PREFIX}* keys; the release's loader takes "
                "them from open_clip): pass clip_weights (--clip-weights), an open_clip ViT-L-14 state dict file"
            )
        clip_path = Path(clip_weights)
        sources[clip_path] = map_shard(open_clip_to_release, load_file_weights(clip_path), clip_path)

    used = {path: {k: t for k, t in part.items() if k not in UNUSED_RELEASE_KEYS} for path, part in sources.items()}
    shapes = {key: tuple(tensor.shape) for part in used.values() for key, tensor in part.items()}
    try:
        config = release_config(
            params, shapes, clip_config, tokenizer_config, tokenizer.bos_token_id, tokenizer.eos_token_id
        )
    except (ValueError, StrictDataclassError) as error:
        raise CheckpointError(f"{weights_path} with {params_path.name}: {error}") from error
    if len(tokenizer) != config.text_config.vocab_size:
        raise CheckpointError(
            f"{source / TOKENIZER_FILE} holds {len(tokenizer)} tokens, but {weights_path} embeds "
            f"{config.text_config.vocab_size} (the release sizes its vocabulary by the tokenizer)"
        )
    # Every key and shape, against a release of this configuration, before anything is written.
    check = KeyCheck(onellm_to_release(_meta_state_dict(config), config), "a OneLLM release of this configuration")
    for path, tensors in used.items():
        check(tensors, path)
    check.finish(" + ".join(str(path) for path in sources))

    unused = {key: tensor for key, tensor in release.items() if key in UNUSED_RELEASE_KEYS}
    params_text = params_path.read_bytes().decode()  # kept byte for byte
    extras_metadata = {"format": "pt", _PARAMS_KEY: params_text, _CLIP_KEY: json.dumps(clip_in_release)}
    with atomic_folder(destination, overwrite) as staging, ShardedWriter(staging, max_shard_bytes) as writer:
        total = sum(len(tensors) for tensors in sources.values())
        with progress_bar(total, "OneLLM release -> owl2", progress, unit="tensor") as bar:
            for path, tensors in sources.items():
                for key, tensor in tensors.items():  # one at a time: the writer holds at most one shard
                    converted, _ = map_shard(release_to_onellm, {key: tensor}, path, config)
                    writer.add(converted)
                    bar.update()
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        MediaConfig.from_model_config(config).save_pretrained(staging)  # the release's preprocessing, for the processor
        shutil.copyfile(source / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        save_file(unused, staging / RELEASE_EXTRAS, metadata=extras_metadata)
    return destination


# -- owl2 -> release -------------------------------------------------------------------------------------
def _read_extras(folder: Path, config: OneLLMConfig) -> tuple[dict[str, torch.Tensor], str, bool]:
    """The unused tensors, the text of params.json and whether CLIP goes into the file: as converted, or fresh."""
    path = folder / RELEASE_EXTRAS
    if not path.is_file():  # not converted from a release: params from the config, CLIP in the file, nothing unused
        try:
            params = params_from_llama_config(config.text_config)
        except ValueError as error:
            raise CheckpointError(f"{folder}: the release's params.json cannot describe this LLaMA: {error}") from error
        return {}, json.dumps(params, indent=2) + "\n", True
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _PARAMS_KEY not in metadata or _CLIP_KEY not in metadata:
        raise CheckpointError(f"{path}: expected the metadata {_PARAMS_KEY!r} and {_CLIP_KEY!r} convert_onellm writes")
    return load_file_weights(path), metadata[_PARAMS_KEY], json.loads(metadata[_CLIP_KEY])


def export_onellm(
    source: str | os.PathLike, destination: str | os.PathLike, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write a `OneLLMModel` folder as the release: `consolidated.00-of-01.pth`, `params.json`, `tokenizer.model`.

    A folder made by `convert_onellm` comes back exactly as the release was (same keys, dtypes and values, the
    same params.json and tokenizer.model), from its `RELEASE_EXTRAS`. Any other folder gets a params.json
    derived from its config and a weight file without the tensors the release never uses (its loader, with
    `strict=False`, keeps open_clip's there). The release is one `torch.save`d file: every tensor is mapped
    from the shards at once; only LLaMA's q and k projections, permuted, take memory of their own.

    Raises:
        CheckpointError: not a OneLLM folder, no tokenizer.model, unknown, missing or misshapen keys.
    """
    source, destination = Path(source), Path(destination)
    model_type = read_config(source).get("model_type")
    if model_type != OneLLMConfig.model_type:
        raise CheckpointError(f"{source / 'config.json'}: model_type {model_type!r}, expected 'onellm'")
    config = OneLLMConfig.from_pretrained(source)
    tokenizer_model = _required_file(source, TOKENIZER_FILE, "the sentencepiece model the release ships")
    unused, params_text, clip_in_release = _read_extras(source, config)

    def release_part(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: t for key, t in tensors.items() if clip_in_release or not key.startswith(CLIP_PREFIX)}

    check = KeyCheck(release_part(onellm_to_release(_meta_state_dict(config), config)), "the OneLLM release")
    release: dict[str, torch.Tensor] = {}
    with progress_bar(len(weight_files(source)), "owl2 -> OneLLM release", progress) as bar:
        for path, shard in iter_shards(source):
            converted = release_part(map_shard(onellm_to_release, shard, path, config))
            check(converted, path)
            release.update(converted)
            bar.update()
    check.finish(source)
    release.update(unused)
    with atomic_folder(destination, overwrite) as staging:
        torch.save(release, staging / WEIGHTS_FILE)
        (staging / PARAMS_FILE).write_bytes(params_text.encode())  # byte for byte
        shutil.copyfile(tokenizer_model, staging / TOKENIZER_FILE)
    return destination
