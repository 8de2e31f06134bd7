"""The OneLLM release -> owl2 -> release: logits equal the official forward's restatement, the round trip is exact.

The toy release is drawn at the shapes the official constructor gives (`official_reference.release_shapes`, plus
Meta's LLaMA written out here), so neither its key names nor its shapes come from owl2; the logits are compared
with the official forward restated on those same tensors. float32 on CPU; tolerances are explicit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import sentencepiece
import torch
from torch.testing import assert_close
from transformers import AutoTokenizer, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from owl2 import OneLLMConfig, OneLLMModel
from owl2.checkpoint import convert_onellm as convert_onellm_module
from owl2.checkpoint.convert_onellm import RELEASE_EXTRAS, convert_onellm, export_onellm, text_tokenizer
from owl2.checkpoint.io import CheckpointError, load_state_dict, weight_files
from owl2.checkpoint.meta_llama import (
    hf_to_meta,
    hf_to_meta_rotary,
    llama_config_from_params,
    meta_to_hf,
    meta_to_hf_rotary,
    params_from_llama_config,
)
from owl2.checkpoint.onellm import UNUSED_RELEASE_KEYS, release_config
from tests.checkpoint.folders import sentencepiece_model, write_onellm_release
from tests.conftest import REPO
from tests.models.onellm import official_reference as ref
from tests.models.onellm.conftest import ALL, TOY, ToyDims, toy_inputs

_spec = importlib.util.spec_from_file_location("convert_checkpoint", REPO / "tools" / "convert_checkpoint.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

LOGITS_RTOL = 1e-4  # relative error (Frobenius) of the logits over real tokens, float32
DIMS = dataclasses.replace(TOY, expert_heads=16)  # the release hard-codes 16 expert heads; the converter assumes them
BLOCK = DIMS.modality_tokens + 2  # start tag, modality tokens, end tag
WEIGHTS = "consolidated.00-of-01.pth"
CLIP_CONFIG = {  # open_clip's model config of the toy CLIP
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": DIMS.image_size, "layers": DIMS.clip_layers, "width": DIMS.clip_width,
                   "patch_size": DIMS.patch_size, "head_width": DIMS.clip_width // DIMS.clip_heads,
                   "mlp_ratio": DIMS.clip_mlp / DIMS.clip_width},
}  # fmt: skip
TOKENIZERS = {  # what the toy's weights cannot tell, where it differs from the release
    "audio_num_mel_bins": DIMS.mel_bins, "audio_num_frames": DIMS.audio_frames, "audio_patch_stride": DIMS.audio_stride,
    "point_group_size": DIMS.point_neighbours, "video_num_frames": DIMS.video_frames,
}  # fmt: skip
TEXT_TOWER = {"llma.clip.token_embedding.weight": (10, 16), "llma.clip.logit_scale": ()}  # open_clip's, kept there
SEVEN_B = ToyDims(
    clip_width=1024, clip_layers=24, clip_heads=16, clip_mlp=4096, image_size=224, patch_size=14, mel_bins=128,
    audio_frames=1024, audio_patch=16, audio_stride=10, point_groups=1024, point_neighbours=32, imu_samples=400,
    imu_kernel=10, voxels=15724, fmri_tokens=8, video_frames=15, experts=3, expert_layers=8, expert_heads=16,
    expert_mlp=2816, modality_tokens=30, router_hidden=4096, llm_width=4096, llm_layers=32, llm_heads=32,
    llm_mlp=11008, vocab_size=32000,
)  # fmt: skip
"""The release's sizes (official constructor, `config/llama2/7B.json`)."""
_FREE = re.compile(r"resample_tokens|start_tag|end_tag|positional_embedding|class_embedding")


# -- the toy release ------------------------------------------------------------------------------------------
def release_params(d: ToyDims) -> dict:
    return {"dim": d.llm_width, "multiple_of": 256, "n_heads": d.llm_heads, "n_layers": d.llm_layers,
            "norm_eps": d.rms_eps, "vocab_size": -1}  # fmt: skip


def llama_shapes(d: ToyDims) -> dict[str, tuple]:
    """Meta's LLaMA-2 tensors (`llama/model.py`) under `llma.`."""
    width, s = d.llm_width, {}
    s.update({ref.L + "tok_embeddings.weight": (d.vocab_size, width), ref.L + "norm.weight": (width,)})
    s[ref.L + "output.weight"] = (d.vocab_size, width)
    for i in range(d.llm_layers):
        p = f"{ref.L}layers.{i}."
        s.update({p + f"attention.w{x}.weight": (width, width) for x in "qkvo"})
        s[p + "feed_forward.w1.weight"] = s[p + "feed_forward.w3.weight"] = (d.llm_mlp, width)
        s[p + "feed_forward.w2.weight"] = (width, d.llm_mlp)
        s[p + "attention_norm.weight"] = s[p + "ffn_norm.weight"] = (width,)
    return s


def official_shapes(d: ToyDims) -> dict[str, tuple]:
    """Every tensor of the release at dims `d`: the official constructor's (visual.proj included) and LLaMA's."""
    rows, cols = ((n - d.audio_patch) // d.audio_stride + 1 for n in (d.mel_bins, d.audio_frames))
    imu = d.imu_samples - d.imu_kernel + 1
    tokens = {"audio": rows * cols, "point": d.point_groups, "fmri": d.fmri_tokens, "imu": imu}
    return {**ref.release_shapes(d, ALL, tokens, grid=d.image_size // d.patch_size), **llama_shapes(d)}


def random_release(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Values that matter: weights ~ 1/sqrt(fan-in), norm gains near 1, biases and free tables (tokens, tags,
    position tables) of a few tenths, so that a wrong key, a skipped layer or a wrong permutation shows."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if _FREE.search(key):
            out[key] = 0.5 * noise
        elif len(shape) >= 2:
            out[key] = noise / math.prod(shape[1:]) ** 0.5
        else:
            out[key] = 1.0 + 0.2 * noise if key.endswith("weight") else 0.2 * noise
    return out


@pytest.fixture(scope="module")
def tokenizer_model() -> bytes:
    return sentencepiece_model(DIMS.vocab_size)


@pytest.fixture(scope="module")
def release(tokenizer_model, tmp_path_factory):
    state_dict = random_release({**official_shapes(DIMS), **TEXT_TOWER}, seed=3)
    folder = write_onellm_release(tmp_path_factory.mktemp("release"), state_dict, release_params(DIMS), tokenizer_model)
    return folder, state_dict


def _convert(source: Path, destination: Path, **options) -> Path:
    options = {"clip_config": CLIP_CONFIG, "tokenizer_config": TOKENIZERS, "progress": False, **options}
    return convert_onellm(source, destination, **options)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory) -> Path:
    folder, _ = release
    return _convert(folder, tmp_path_factory.mktemp("owl2") / "onellm", max_shard_bytes=2**16)


@pytest.fixture(scope="module")
def model(converted) -> OneLLMModel:
    return OneLLMModel.from_pretrained(converted).eval()


def _release_file(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / WEIGHTS, weights_only=True)


def _assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), key


# -- (a) equivalence, and what a converted folder holds --------------------------------------------------------
@pytest.mark.parametrize("modality", ALL)
def test_converted_release_gives_the_official_logits(release, model, modality):
    _, state_dict = release
    examples = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 0, 0]])  # the release's layout, padded with 0
    placeholder = torch.full((2, 1), model.config.modality_token_index[modality])
    ids = torch.cat([examples[:, :1], placeholder, examples[:, 1:]], dim=1)  # owl2's: a placeholder after BOS
    inputs = toy_inputs(modality, batch=2, seed=3, dims=DIMS)
    with torch.no_grad():
        ours = model(ids, attention_mask=(ids != 0).long(), modality_inputs={modality: inputs}).logits[:, BLOCK:]
        theirs = ref.forward(state_dict, examples, inputs, modality, DIMS)  # points grouped on columns 3:6
    real = examples != 0
    rel = (ours[real] - theirs[real]).norm() / theirs[real].norm()
    assert rel < LOGITS_RTOL, f"relative error {rel:.2e}"


def test_converted_folder_holds_the_model_in_shards_its_tokenizer_and_the_release_extras(release, converted, model):
    folder, _ = release
    assert len(weight_files(converted)) > 1
    assert set(load_state_dict(converted)) == set(model.state_dict())
    assert model.config.tokenizer_config.point_sample_on == "rgb"  # the release groups points on their colours
    assert model.config.projection_config.num_attention_heads == 16
    assert model.config.modalities == list(ALL)
    pieces = sentencepiece.SentencePieceProcessor(model_proto=(folder / "tokenizer.model").read_bytes())
    prompt = "Describe the motion. What is this?"
    expected = [pieces.bos_id(), *pieces.encode(prompt)]  # the release's `encode(prompt, bos=True, eos=False)`
    assert text_tokenizer(folder)(prompt).input_ids == expected
    assert AutoTokenizer.from_pretrained(converted)(prompt).input_ids == expected
    assert (converted / "tokenizer.model").read_bytes() == (folder / "tokenizer.model").read_bytes()
    assert (converted / RELEASE_EXTRAS).is_file()


def test_the_converted_folder_loads_as_a_model_and_its_processor_for_the_command_line(converted, model):
    from owl2.eval.generation import load_pretrained
    from owl2.models.onellm import OneLLMModel
    from owl2.processing import OneLLMProcessor
    from owl2.processing.media import MediaConfig

    loaded, processor = load_pretrained(converted)
    assert isinstance(loaded, OneLLMModel) and isinstance(processor, OneLLMProcessor)
    assert processor.template.name == "onellm"
    assert processor.media_processor.config == MediaConfig.from_model_config(model.config)


def test_the_releases_shapes_give_the_seven_b_preset():
    params = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
    config = release_config(params, official_shapes(SEVEN_B))  # default CLIP config: open_clip's ViT-L-14
    assert config.to_dict() == OneLLMConfig.from_json_file(REPO / "configs" / "model" / "onellm-7b.json").to_dict()


# -- (b) round trips ------------------------------------------------------------------------------------------
def test_release_round_trip_is_exact(tokenizer_model, tmp_path):
    """In the release's dtypes (bf16 from `save_model`, CLIP half from `param.data.half()`), its params.json text."""
    state_dict = random_release({**official_shapes(DIMS), **TEXT_TOWER}, seed=5)
    state_dict = {key: tensor.to(torch.bfloat16) for key, tensor in state_dict.items()}
    state_dict |= {key: t.to(torch.float16) for key, t in state_dict.items() if key.startswith("llma.clip.visual.")}
    state_dict["llma.clip.logit_scale"] = torch.tensor(4.6052, dtype=torch.float32)
    source = write_onellm_release(tmp_path / "release", state_dict, release_params(DIMS), tokenizer_model)
    (source / "params.json").write_text(json.dumps(release_params(DIMS), indent=4) + "\n")
    _convert(source, tmp_path / "owl2", max_shard_bytes=2**16)
    export_onellm(tmp_path / "owl2", tmp_path / "back", progress=False)
    assert sorted(path.name for path in (tmp_path / "back").iterdir()) == [WEIGHTS, "params.json", "tokenizer.model"]
    _assert_same_tensors(_release_file(tmp_path / "back"), state_dict)
    for name in ("params.json", "tokenizer.model"):
        assert (tmp_path / "back" / name).read_bytes() == (source / name).read_bytes(), name


def test_release_without_clip_takes_open_clip_weights_and_round_trips(release, converted, tmp_path):
    folder, state_dict = release
    without = {key: tensor for key, tensor in state_dict.items() if not key.startswith("llma.clip.visual.")}
    source = _copy(folder, tmp_path / "release", without)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: CLIP's weights are missing .*--clip-weights"):
        _convert(source, tmp_path / "owl2")
    clip = {key.removeprefix("llma.clip."): t for key, t in state_dict.items() if key.startswith("llma.clip.")}
    clip["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(6, 2)  # open_clip's text tower: left out
    torch.save(clip, tmp_path / "open_clip.pt")
    _convert(source, tmp_path / "owl2", clip_weights=tmp_path / "open_clip.pt")
    _assert_same_tensors(load_state_dict(tmp_path / "owl2"), load_state_dict(converted))
    export_onellm(tmp_path / "owl2", tmp_path / "back", progress=False)
    _assert_same_tensors(_release_file(tmp_path / "back"), without)  # as it came: without CLIP
    with pytest.raises(CheckpointError, match=r"holds CLIP's weights .* already"):
        _convert(folder, tmp_path / "twice", clip_weights=tmp_path / "open_clip.pt")


def test_a_folder_not_converted_from_the_release_exports_and_converts_back(model, converted, tmp_path):
    model.save_pretrained(tmp_path / "fresh")
    shutil.copyfile(converted / "tokenizer.model", tmp_path / "fresh" / "tokenizer.model")
    export_onellm(tmp_path / "fresh", tmp_path / "release", progress=False)
    params = json.loads((tmp_path / "release" / "params.json").read_text())
    assert params == {"dim": 48, "multiple_of": 128, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-5, "vocab_size": -1}
    assert not UNUSED_RELEASE_KEYS & set(_release_file(tmp_path / "release"))  # the release's loader keeps open_clip's
    _convert(tmp_path / "release", tmp_path / "again")
    _assert_same_tensors(load_state_dict(tmp_path / "again"), load_state_dict(converted))


# -- (c) the q/k permutation ----------------------------------------------------------------------------------
def hf_to_meta_by_definition(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Meta's row `h*hd + 2j + a` holds transformers' row `h*hd + a*hd/2 + j`: head h, rotated pair j, member a.

    Meta's RoPE rotates dims (2j, 2j + 1) of each head as one complex number; transformers' `rotate_half` rotates
    dims (j, j + hd/2) by the same angle.
    """
    head_dim = weight.shape[0] // heads
    out = torch.empty_like(weight)
    for h in range(heads):
        for j in range(head_dim // 2):
            for a in range(2):
                out[h * head_dim + 2 * j + a] = weight[h * head_dim + a * head_dim // 2 + j]
    return out


@pytest.mark.parametrize("heads", [1, 2, 3, 6])
def test_rotary_permutation_is_the_one_its_definition_gives(heads):
    weight = torch.randn(24, 5)
    meta = hf_to_meta_by_definition(weight, heads)
    assert torch.equal(hf_to_meta_rotary(weight, heads), meta)
    assert torch.equal(meta_to_hf_rotary(meta, heads), weight)


def test_metas_rope_on_metas_rows_is_transformers_rope_on_the_permuted_rows():
    heads, head_dim, width, length = 2, 8, 6, 5
    w_meta, x = torch.randn(heads * head_dim, width), torch.randn(1, length, width)
    q_meta = (x @ w_meta.T).view(1, length, heads, head_dim)
    rotated_meta = ref.apply_rotary_emb(q_meta, ref.precompute_freqs_cis(head_dim, length))  # (1, L, H, hd)
    q_hf = (x @ meta_to_hf_rotary(w_meta, heads).T).view(1, length, heads, head_dim).transpose(1, 2)  # (1, H, L, hd)
    config = LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads, rope_theta=10000.0)
    cos, sin = LlamaRotaryEmbedding(config)(q_hf, torch.arange(length)[None])
    rotated_hf, _ = apply_rotary_pos_emb(q_hf, q_hf, cos, sin)
    ours = rotated_hf.transpose(1, 2).reshape(length, heads * head_dim).T  # (H * hd, L), transformers' row order
    theirs = meta_to_hf_rotary(rotated_meta.reshape(length, heads * head_dim).T, heads)  # Meta's rows, reordered
    assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_meta_llama_maps_are_inverse_with_grouped_kv_heads():
    wq, wk, wv = torch.randn(16, 16), torch.randn(8, 16), torch.randn(8, 16)
    meta = {"layers.0.attention.wq.weight": wq, "layers.0.attention.wk.weight": wk,
            "layers.0.attention.wv.weight": wv, "output.weight": torch.randn(10, 16)}  # fmt: skip
    hf = meta_to_hf(meta, num_heads=4, num_kv_heads=2)
    assert torch.equal(hf_to_meta_by_definition(hf["model.layers.0.self_attn.q_proj.weight"], 4), wq)
    assert torch.equal(hf_to_meta_by_definition(hf["model.layers.0.self_attn.k_proj.weight"], 2), wk)
    assert torch.equal(hf["model.layers.0.self_attn.v_proj.weight"], wv)
    _assert_same_tensors(hf_to_meta(hf, num_heads=4, num_kv_heads=2), meta)


def test_params_json_round_trips_through_the_llama_config():
    params = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
    text = llama_config_from_params(params, vocab_size=32000, intermediate_size=11008)
    assert (text.hidden_size, text.num_key_value_heads, text.intermediate_size) == (4096, 32, 11008)
    assert params_from_llama_config(text) == params
    grouped = {**params, "n_kv_heads": 8, "rope_theta": 500000.0}
    assert params_from_llama_config(llama_config_from_params(grouped, 32000, 11008)) == grouped


# -- (d) errors -----------------------------------------------------------------------------------------------
def _copy(folder: Path, destination: Path, state_dict: dict | None = None, params: dict | None = None) -> Path:
    shutil.copytree(folder, destination)
    if state_dict is not None:
        torch.save(state_dict, destination / WEIGHTS)
    if params is not None:
        (destination / "params.json").write_text(json.dumps(params))
    return destination


@pytest.mark.parametrize("name", ["params.json", WEIGHTS, "tokenizer.model"])
def test_a_missing_file_is_named(release, tmp_path, name):
    folder, _ = release
    source = _copy(folder, tmp_path / "release")
    (source / name).unlink()
    with pytest.raises(CheckpointError, match=rf"release: no {re.escape(name)} "):
        _convert(source, tmp_path / "owl2")
    assert not (tmp_path / "owl2").exists()


def test_an_unexpected_key_is_named(release, tmp_path):
    folder, state_dict = release
    source = _copy(folder, tmp_path / "release", {**state_dict, "llma.mm_projector.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: keys that a OneLLM release .*: llma\.mm_projector\.weight"):
        _convert(source, tmp_path / "owl2")
    assert not (tmp_path / "owl2").exists() and not list(tmp_path.glob(".owl2.tmp-*"))


def test_misshapen_and_missing_keys_are_named(release, tmp_path):
    folder, state_dict = release
    source = _copy(folder, tmp_path / "a", {**state_dict, "llma.norm.weight": torch.ones(7)})
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: llma\.norm\.weight has shape \(7,\), .* expects \(48,\)"):
        _convert(source, tmp_path / "owl2")
    missing = {key: tensor for key, tensor in state_dict.items() if key != "llma.layers.1.ffn_norm.weight"}
    source = _copy(folder, tmp_path / "b", missing)
    with pytest.raises(CheckpointError, match=r"missing weights for .*llma\.layers\.1\.ffn_norm\.weight"):
        _convert(source, tmp_path / "owl2")


def test_sizes_the_weights_contradict_are_named(release, tmp_path):
    folder, _ = release
    source = _copy(folder, tmp_path / "vocab")
    (source / "tokenizer.model").write_bytes(sentencepiece_model(80))
    with pytest.raises(CheckpointError, match=r"tokenizer\.model holds 80 tokens, but .* embeds 128"):
        _convert(source, tmp_path / "owl2")
    with pytest.raises(CheckpointError, match=r"positional_embedding\.audio has 41 rows, but .* gives 1326 \+ 1"):
        _convert(folder, tmp_path / "owl2", tokenizer_config=None)  # the release's audio spectrogram and stride
    with pytest.raises(CheckpointError, match=r"\['point_sample_on'\] cannot be given"):
        _convert(folder, tmp_path / "owl2", tokenizer_config={"point_sample_on": "xyz"})
    source = _copy(folder, tmp_path / "params", params={**release_params(DIMS), "use_scaled_rope": True})
    with pytest.raises(CheckpointError, match=r"params\.json: unknown fields \['use_scaled_rope'\]"):
        _convert(source, tmp_path / "owl2")


# -- (e) the command line -------------------------------------------------------------------------------------
def test_cli_converts_and_exports_a_release(release, tmp_path, capsys):
    folder, state_dict = release
    (tmp_path / "clip.json").write_text(json.dumps(CLIP_CONFIG))
    argv = ["onellm", str(folder), str(tmp_path / "owl2"), "--clip-config", str(tmp_path / "clip.json"),
            "--tokenizer-config", json.dumps(TOKENIZERS), "--max-shard-size", "100KB", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    assert len(weight_files(tmp_path / "owl2")) > 1
    assert cli.main(["to-onellm", str(tmp_path / "owl2"), str(tmp_path / "back"), "--no-progress"]) == 0
    _assert_same_tensors(_release_file(tmp_path / "back"), state_dict)

    assert cli.main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["onellm", str(folder), str(tmp_path / "other"), "--no-progress"]) == 1  # the release's CLIP
    assert "llma.clip.visual.conv1.weight has shape (32, 3, 7, 7), but open_clip's ViT-L-14" in capsys.readouterr().err
    assert cli.main(["to-onellm", str(folder), str(tmp_path / "other"), "--no-progress"]) == 1
    assert "no config.json" in capsys.readouterr().err


# -- (f) memory -----------------------------------------------------------------------------------------------
def _status(field: str) -> int:
    """Bytes, from the kernel's accounting of this process (/proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _measure_in_child(convert) -> dict[str, int]:
    """Run `convert()` in a forked child, which shares the imports (none happens while measuring); return how much
    its peak RSS grew, and how many file pages it had mapped at the end."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, exit without running the parent's teardown
        code = 1
        try:
            torch.set_num_threads(1)  # no intra-op pool inherited half-alive from the parent
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            base, base_file = _status("VmRSS"), _status("RssFile")
            convert()
            report, code = {"grown": _status("VmHWM") - base, "file": _status("RssFile") - base_file}, 0
        except BaseException as error:  # reported to the parent, which fails the test
            report = {"error": f"{type(error).__name__}: {error}"}
        finally:
            os.write(write, json.dumps(report).encode())
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert "error" not in report, report["error"]
    return report


def test_peak_memory_stays_near_one_output_shard(tokenizer_model, tmp_path, monkeypatch):
    """Convert a ~50 MiB release (bf16, as the release) into 4 MiB shards, and read the peak RSS.

    The release is one memory-mapped file: the pages read count in RSS as file pages (page cache, which the kernel
    reclaims at will). Keeping the file mapped to the end tells them apart from the memory the conversion allocates.
    """
    d = dataclasses.replace(DIMS, llm_width=512, llm_layers=8, llm_heads=8, llm_mlp=1536)
    state_dict = {key: t.to(torch.bfloat16) for key, t in random_release(official_shapes(d)).items()}
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    source = write_onellm_release(tmp_path / "release", state_dict, release_params(d), tokenizer_model)
    del state_dict
    output_shard = 4 * 2**20
    mapped, load = [], convert_onellm_module.load_file_weights

    def load_and_keep_mapped(path):
        mapped.append(load(path))
        return mapped[-1]

    monkeypatch.setattr(convert_onellm_module, "load_file_weights", load_and_keep_mapped)
    usage = _measure_in_child(lambda: _convert(source, tmp_path / "owl2", max_shard_bytes=output_shard))
    allocated = usage["grown"] - usage["file"]  # bounds what the conversion allocated at its peak
    mib = {name: f"{size / 2**20:.0f} MiB" for name, size in dict(total=total, shard=output_shard, **usage).items()}
    print(f"\nrelease {mib['total']}, output shard {mib['shard']}, peak RSS growth {mib['grown']}, "
          f"file pages mapped at the end {mib['file']}")  # fmt: skip
    assert allocated < 3 * output_shard, f"the conversion allocated about {allocated / 2**20:.0f} MiB"
    assert usage["file"] > 0.9 * total  # the release was read memory-mapped, all of it
    assert len(weight_files(tmp_path / "owl2")) > 10
