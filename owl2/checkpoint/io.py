"""Reading and writing checkpoint folders, one shard at a time.

Reads the layouts transformers writes (and the official mPLUG-Owl2 release uses): one
`model.safetensors` / `pytorch_model.bin`, or shards listed by `model.safetensors.index.json` /
`pytorch_model.bin.index.json`. Pickles are loaded with `weights_only=True` only; no code from a
checkpoint ever runs. Writes shards of bounded size into a temporary folder that is renamed into
place only once complete, so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
"""Unsharded weight files, in order of preference."""

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""Shard indices (transformers' format: `{"metadata": ..., "weight_map": {key: file}}`), in order of preference."""

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
"""Largest output shard (bytes) unless told otherwise; a shard holds at least one tensor."""

WeightsFormat = Literal["safetensors", "bin"]


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be read or does not hold what was expected."""


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a checkpoint folder, as a dict."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no config.json in the checkpoint folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a checkpoint folder, in shard order.

    Raises:
        CheckpointError: no weights, or an index naming a file that is not there.
    """
    folder = Path(folder)
    for name in INDEX_FILES:
        index_path = folder / name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as error:
                raise CheckpointError(f"{index_path}: not a shard index with a 'weight_map' ({error})") from error
            files = [folder / name for name in sorted(set(weight_map.values()))]
            missing = [str(path) for path in files if not path.is_file()]
            if missing:
                raise CheckpointError(f"{index_path} lists shards that are missing: {', '.join(missing)}")
            return files
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder}: no weights (expected one of {SINGLE_FILES + INDEX_FILES})")


def load_file_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one `.safetensors` or `.bin` file (pickles with `weights_only=True`, memory-mapped).

    Raises:
        CheckpointError: the file is truncated, corrupt or not a weight file; the message names it.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # legacy (non-zip) pickles cannot be memory-mapped
                raise
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as error:
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(
            f"{path}: cannot read weights ({size} bytes; truncated or corrupt?): {type(error).__name__}: {error}"
        ) from error
    except Exception as error:  # e.g. pickle.UnpicklingError from weights_only on a non-tensor object
        raise CheckpointError(f"{path}: not a weights file that loads safely: {type(error).__name__}: {error}") from error
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a flat mapping of names to tensors")
    return dict(state_dict)


def iter_shards(folder: str | os.PathLike) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield `(file, tensors)` for each weight file of a folder, one at a time (drop each before the next)."""
    for path in weight_files(folder):
        yield path, load_file_weights(path)


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder in one dict (for small models; large ones: `iter_shards`)."""
    state_dict: dict[str, torch.Tensor] = {}
    for _, shard in iter_shards(folder):
        state_dict.update(shard)
    return state_dict


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes `destination` only if the block completes.

    Raises:
        FileExistsError: `destination` exists and `overwrite` is False.
    """
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} already exists (pass overwrite to replace it)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        shutil.rmtree(destination)
    staging.chmod(0o755)
    staging.rename(destination)


class ShardedWriter:
    """Write tensors into shards of at most `max_shard_bytes`, plus an index when there is more than one.

    Tensors are buffered until a shard is full, so memory holds at most one output shard. Shards get
    their final `-XXXXX-of-YYYYY` names (transformers' convention) in `close()`, once the count is known.

    Example:
        >>> with ShardedWriter(folder, max_shard_bytes=2**30) as writer:
        ...     for shard in shards:
        ...         writer.add(convert(shard))
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        weights_format: WeightsFormat = "safetensors",
    ):
        if weights_format not in ("safetensors", "bin"):
            raise ValueError(f"weights_format must be 'safetensors' or 'bin', got {weights_format!r}")
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self.weights_format = weights_format
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []  # (temporary file, its keys)
        self._keys: set[str] = set()
        self.total_bytes = 0

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def add(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Queue tensors for writing; flushes a shard whenever the buffer reaches `max_shard_bytes`.

        Raises:
            KeyError: a key written before, named in the message.
        """
        for key, tensor in state_dict.items():
            if key in self._keys:
                raise KeyError(f"key {key!r} given twice (duplicated across input shards?)")
            size = tensor.numel() * tensor.element_size()
            if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
                self._flush()
            self._keys.add(key)
            self._buffer[key] = tensor
            self._buffer_bytes += size
            self.total_bytes += size

    def _flush(self) -> None:
        if not self._buffer:
            return
        path = self.folder / f"shard-{len(self._shards):05d}.tmp"
        tensors = {key: tensor.contiguous() for key, tensor in self._buffer.items()}
        if self.weights_format == "safetensors":
            save_file(tensors, path, metadata={"format": "pt"})
        else:
            torch.save(tensors, path)
        self._shards.append((path, list(tensors)))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> list[Path]:
        """Flush the last shard, give every shard its final name, write the index; returns the files."""
        self._flush()
        stem, suffix = ("model", "safetensors") if self.weights_format == "safetensors" else ("pytorch_model", "bin")
        count = len(self._shards)
        if count == 1:
            names = [f"{stem}.{suffix}"]
        else:
            names = [f"{stem}-{i + 1:05d}-of-{count:05d}.{suffix}" for i in range(count)]
        weight_map: dict[str, str] = {}
        files = []
        for (path, keys), name in zip(self._shards, names):
            path.rename(self.folder / name)
            files.append(self.folder / name)
            weight_map.update(dict.fromkeys(keys, name))
        if count > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / f"{stem}.{suffix}.index.json").write_text(json.dumps(index, indent=2) + "\n")
        self._shards = []
        return files
