"""The official release -> owl2 -> official: outputs equal an independent oracle of the official forward pass."""

import json

import pytest
import torch

from owl2 import Owl2Model
from owl2.checkpoint.convert import convert_official, export_official
from owl2.checkpoint.io import CheckpointError, load_state_dict
from owl2.checkpoint.official import (
    official_config_to_owl2,
    official_pos_embeds,
    official_qkv_to_timm,
    official_to_owl2,
    timm_qkv_to_official,
)
from owl2.models.abstractor import sincos_1d, sincos_2d
from tests.checkpoint import official_reference as ref
from tests.checkpoint.folders import write_folder

LOGITS_RTOL = 1e-4  # relative error (Frobenius) of the logits over real tokens, float32


@pytest.fixture(scope="module")
def official():
    config = ref.official_config()
    return config, ref.random_official_state_dict(config, seed=3)


def _batch(config):
    size = config["visual_config"]["visual_model"]["image_size"]
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 5, -200, 7, 8, 9, 10, 11, 12], [1, -200, 3, -200, 4, 6, 0, 0, 0]])
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    labels = ids.masked_fill(mask == 0, -100).masked_fill(ids == -200, -100)
    return ids, mask, labels, images


def _assert_matches_reference(model, config, state_dict):
    ids, mask, labels, images = _batch(config)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=images, labels=labels)
        logits, loss, expanded_mask = ref.forward(state_dict, config, ids, images, mask, labels)
    assert torch.equal(out.attention_mask, expanded_mask)
    real = expanded_mask.bool()  # padded slots get positions that differ by design (see owl2.models.owl2)
    rel = (out.logits[real] - logits[real]).norm() / logits[real].norm()
    assert rel < LOGITS_RTOL, f"relative error {rel:.2e}"
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("weights_format", "num_shards"), [("bin", 1), ("safetensors", 3), ("bin", 4)])
def test_converted_folder_matches_the_official_forward(official, tmp_path, weights_format, num_shards):
    config, state_dict = official
    source = write_folder(tmp_path / "official", config, state_dict, weights_format, num_shards)
    convert_official(source, tmp_path / "owl2", max_shard_bytes=2**20, progress=False)
    assert len(list((tmp_path / "owl2").glob("model-*-of-*.safetensors"))) > 1  # sharded output
    model = Owl2Model.from_pretrained(tmp_path / "owl2").eval()
    _assert_matches_reference(model, config, state_dict)


def test_from_pretrained_loads_an_official_folder(official, tmp_path):
    config, state_dict = official
    source = write_folder(tmp_path / "official", config, state_dict, "safetensors", 2)
    model = Owl2Model.from_pretrained(source)
    assert not model.training
    _assert_matches_reference(model, config, state_dict)


def test_greedy_tokens_equal_the_official_ones(official):
    config, state_dict = official
    model = Owl2Model(official_config_to_owl2(config)).eval()
    model.load_state_dict(official_to_owl2(state_dict, model.config), strict=True)
    _, _, _, images = _batch(config)
    ids = torch.tensor([[1, 9, -200, 17, 33]])
    expected = ref.greedy(state_dict, config, ids, images[:1], steps=6)
    generated = model.generate(input_ids=ids, pixel_values=images[:1], max_new_tokens=6, do_sample=False)
    assert generated[0, ids.shape[1] :].tolist() == expected


@pytest.mark.parametrize("weights_format", ["safetensors", "bin"])
def test_official_owl2_official_round_trip_is_exact(official, tmp_path, weights_format):
    config, state_dict = official
    source = write_folder(tmp_path / "official", config, state_dict, "bin", 2)
    convert_official(source, tmp_path / "owl2", progress=False)
    export_official(tmp_path / "owl2", tmp_path / "back", max_shard_bytes=2**20, weights_format=weights_format, progress=False)
    back = load_state_dict(tmp_path / "back")
    expected = {k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")}
    assert set(back) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(back[key], tensor), key
    again = official_config_to_owl2(json.loads((tmp_path / "back" / "config.json").read_text()))
    assert again.to_dict() == official_config_to_owl2(config).to_dict()


def test_qkv_permutation_groups_rows_per_head():
    heads, head_dim, width = 4, 3, 12
    rows = torch.arange(3 * width)  # official row r = (head, which, dim)
    timm = official_qkv_to_timm(rows, heads)
    which, head, dim = 1, 2, 0  # timm's row (which, head, dim) must hold official row (head, which, dim)
    assert timm[which * width + head * head_dim + dim] == head * 3 * head_dim + which * head_dim + dim
    weight = torch.randn(3 * width, width)
    assert torch.equal(timm_qkv_to_official(official_qkv_to_timm(weight, heads), heads), weight)


def test_official_buffers_equal_the_models_computed_tables():
    q_pos, k_pos = official_pos_embeds(64, 8, 4)
    ref_q, ref_k = ref.official_buffers(64, 8, 4)
    assert torch.equal(q_pos, ref_q) and torch.equal(k_pos, ref_k)
    torch.testing.assert_close(sincos_1d(64, torch.arange(8)), q_pos, rtol=0, atol=1e-5)
    torch.testing.assert_close(sincos_2d(64, 4), k_pos, rtol=0, atol=1e-5)


def test_unknown_key_is_named(official, tmp_path):
    config, state_dict = official
    source = write_folder(tmp_path / "official", config, {**state_dict, "model.mm_projector.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*model\.mm_projector\.weight"):
        convert_official(source, tmp_path / "owl2", progress=False)
    assert not (tmp_path / "owl2").exists()
    assert not list(tmp_path.glob(".owl2.tmp-*"))  # the staging folder is cleaned up


def test_missing_and_misshapen_keys_are_named(official, tmp_path):
    config, state_dict = official
    missing = {k: v for k, v in state_dict.items() if k != "model.layers.1.self_attn.v_proj.multiway.1.weight"}
    source = write_folder(tmp_path / "a", config, missing, "safetensors", 2)
    with pytest.raises(CheckpointError, match=r"missing.*language_model\.layers\.1\.self_attn\.v_proj\.image\.weight"):
        convert_official(source, tmp_path / "out", progress=False)
    bad = {**state_dict, "model.norm.weight": torch.ones(7)}
    source = write_folder(tmp_path / "b", config, bad)
    with pytest.raises(CheckpointError, match=r"language_model\.norm\.weight has shape \(7,\).*\(128,\)"):
        convert_official(source, tmp_path / "out", progress=False)


@pytest.mark.parametrize("weights_format", ["bin", "safetensors"])
def test_truncated_shard_is_named(official, tmp_path, weights_format):
    config, state_dict = official
    source = write_folder(tmp_path / "official", config, state_dict, weights_format, 3)
    shard = sorted(source.glob(f"*-00002-of-00003.*"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*truncated or corrupt"):
        convert_official(source, tmp_path / "owl2", progress=False)
