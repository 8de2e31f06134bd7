"""Writing test checkpoint folders in the official release's layouts (single file or shards, .bin or safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_folder(
    folder: Path, config: dict, state_dict: dict[str, torch.Tensor], weights_format: str = "bin", num_shards: int = 1
) -> Path:
    """Write `config.json` and the weights as transformers (and the official release) lay them out."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    stem, suffix = ("pytorch_model", "bin") if weights_format == "bin" else ("model", "safetensors")
    keys = list(state_dict)
    chunks = [keys[i::num_shards] for i in range(num_shards)]  # interleaved: a layer spans shards
    weight_map = {}
    for i, chunk in enumerate(chunks):
        name = f"{stem}.{suffix}" if num_shards == 1 else f"{stem}-{i + 1:05d}-of-{num_shards:05d}.{suffix}"
        tensors = {key: state_dict[key].contiguous() for key in chunk}
        if weights_format == "bin":
            torch.save(tensors, folder / name)
        else:
            save_file(tensors, folder / name)
        weight_map.update(dict.fromkeys(chunk, name))
    if num_shards > 1:
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps(index))
    return folder
