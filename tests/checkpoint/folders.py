"""Writing test checkpoint folders in the official releases' layouts (mPLUG-Owl2: single file or shards, .bin or
safetensors; OneLLM: one consolidated .pth, params.json and a sentencepiece tokenizer.model)."""

from __future__ import annotations

import io
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


def sentencepiece_model(vocab_size: int) -> bytes:
    """A sentencepiece BPE model of exactly `vocab_size` pieces, trained on a few sentences, LLaMA's special ids
    (unk 0, bos 1, eos 2, no pad) and LLaMA's normalisation (none: identity, whitespace kept)."""
    import sentencepiece

    sentences = [
        "A chat between a curious human and an artificial intelligence assistant.",
        "The assistant gives helpful, detailed, and polite answers to the human's questions.",
        "Provide a one-sentence caption for the provided image.",
        "Describe the motion. Describe the scene based on fMRI data. What is this?",
    ]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 8), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


def write_onellm_release(
    folder: Path, state_dict: dict[str, torch.Tensor], params: dict, tokenizer_model: bytes
) -> Path:
    """Write a folder as the OneLLM release lays it out: `consolidated.00-of-01.pth`, params.json, tokenizer.model."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / "consolidated.00-of-01.pth")
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model").write_bytes(tokenizer_model)
    return folder
