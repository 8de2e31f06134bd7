"""LLaMA-2 + CLIP -> a fresh Owl2Model: text-only logits are LLaMA's, vision tokens are CLIP's."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from owl2 import Owl2Model
from owl2.checkpoint.clip import clip_to_owl2
from owl2.checkpoint.convert import init_from_llama_clip
from owl2.checkpoint.io import CheckpointError
from tests.conftest import toy_config

VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    text = toy_config().text_config.to_dict()
    assert text["num_key_value_heads"] < text["num_attention_heads"]  # GQA
    torch.manual_seed(1)
    llama = LlamaForCausalLM(LlamaConfig.from_dict(text)).eval()
    folder = tmp_path_factory.mktemp("llama")
    llama.save_pretrained(folder, max_shard_size="200KB")  # several shards
    assert len(list(folder.glob("*.safetensors"))) > 1
    return folder, llama


def _clip(kind, folder):
    torch.manual_seed(2)
    if kind == "vision":
        model = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
        tower = model
    else:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=text)).eval()
        tower = CLIPVisionModel(model.config.vision_config).eval()
        tower.load_state_dict({k.removeprefix("vision_model."): v for k, v in model.state_dict().items()
                               if k.startswith("vision_model.")})  # fmt: skip
    with torch.no_grad():  # non-trivial norms, so that a misplaced LayerNorm shows
        for name, param in tower.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
        if kind != "vision":
            model.load_state_dict({**model.state_dict(), **{"vision_model." + k: v for k, v in tower.state_dict().items()}})
    model.save_pretrained(folder)
    return tower


@pytest.mark.parametrize("clip_kind", ["vision", "full"])
def test_init_reproduces_llama_and_clip(llama_dir, tmp_path, clip_kind):
    llama_folder, llama = llama_dir
    tower = _clip(clip_kind, tmp_path / "clip")
    init_from_llama_clip(llama_folder, tmp_path / "clip", tmp_path / "owl2", max_shard_bytes=2**20, progress=False)
    model = Owl2Model.from_pretrained(tmp_path / "owl2").eval()
    assert model.config.abstractor_config.hidden_size == VISION["hidden_size"]
    assert model.config.abstractor_config.intermediate_size == 176  # 2816/1024 of the CLIP width

    ids = torch.randint(3, llama.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, llama(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        pixels = torch.randn(2, 3, 56, 56)
        expected = tower(pixel_values=pixels)
        expected = tower.post_layernorm(expected.last_hidden_state)  # CLIP normalises only its pooled token
        torch.testing.assert_close(model.vision_model(pixels), expected, rtol=1e-5, atol=1e-5)
    # both modality branches start from LLaMA's weights
    layer = model.language_model.layers[0]
    assert torch.equal(layer.self_attn.k_proj["image"].weight, llama.model.layers[0].self_attn.k_proj.weight)
    assert torch.equal(layer.input_layernorm["image"].weight, layer.input_layernorm["text"].weight)
    # the abstractor is freshly initialised as the official code does: N(0, 1) queries, linears drawn from
    # N(0, initializer_range) (0.02 in the release, LLaMA's value; the toy LLaMA here has the toy preset's)
    assert 0.7 < model.abstractor.query_embeds.std() < 1.3
    std = model.config.text_config.initializer_range
    assert 0.8 * std < model.abstractor.layers[0].attn.q_proj.weight.std() < 1.2 * std
    assert torch.equal(model.abstractor.layers[0].query_norm.weight, torch.ones(64))


def test_clip_keys_without_their_siblings_are_named():
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION))
    state_dict = {k: v for k, v in tower.state_dict().items() if k != "encoder.layers.1.self_attn.v_proj.bias"}
    with pytest.raises(KeyError, match=r"encoder\.layers\.1\.self_attn\.v_proj\.bias"):
        clip_to_owl2(state_dict)
    with pytest.raises(KeyError, match="encoder.layers.0.extra"):
        clip_to_owl2({**tower.state_dict(), "encoder.layers.0.extra": torch.zeros(1)})


def test_init_names_a_missing_llama_weight(llama_dir, tmp_path):
    llama_folder, llama = llama_dir
    _clip("vision", tmp_path / "clip")
    small = LlamaForCausalLM(LlamaConfig.from_dict({**llama.config.to_dict(), "num_hidden_layers": 3}))
    small.save_pretrained(tmp_path / "llama3")
    config = (tmp_path / "llama3" / "config.json")
    config.write_text(config.read_text().replace('"num_hidden_layers": 3', '"num_hidden_layers": 4'))
    with pytest.raises(CheckpointError, match=r"missing weights.*language_model\.layers\.3\."):
        init_from_llama_clip(tmp_path / "llama3", tmp_path / "clip", tmp_path / "owl2", progress=False)
