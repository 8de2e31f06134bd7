"""tools/convert_checkpoint.py end to end: official -> owl2 -> official, init, and errors as exit codes."""

import importlib.util

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from owl2 import Owl2Model
from owl2.checkpoint.io import load_state_dict
from tests.checkpoint import official_reference as ref
from tests.checkpoint.folders import write_folder
from tests.conftest import REPO, toy_config

_spec = importlib.util.spec_from_file_location("convert_checkpoint", REPO / "tools" / "convert_checkpoint.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def test_official_round_trip_through_the_cli(tmp_path, capsys):
    config = ref.official_config()
    state_dict = ref.random_official_state_dict(config, seed=5)
    source = write_folder(tmp_path / "official", config, state_dict, "safetensors", 2)
    assert cli.main(["mplug-owl2", str(source), str(tmp_path / "owl2"), "--no-progress", "--max-shard-size", "100KB"]) == 0
    assert cli.main(["to-mplug-owl2", str(tmp_path / "owl2"), str(tmp_path / "back"), "--format", "bin", "--no-progress"]) == 0
    back = load_state_dict(tmp_path / "back")
    assert (tmp_path / "back" / "pytorch_model.bin").is_file()
    assert set(back) == {k for k in state_dict if not k.endswith("inv_freq")}
    assert all(torch.equal(back[k], state_dict[k]) for k in back)

    assert cli.main(["mplug-owl2", str(source), str(tmp_path / "owl2"), "--no-progress"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_init_through_the_cli(tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig.from_dict(toy_config().text_config.to_dict())).save_pretrained(tmp_path / "llama")
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=28, patch_size=14)).save_pretrained(tmp_path / "clip")  # fmt: skip
    argv = ["init", "--llm", str(tmp_path / "llama"), "--vision", str(tmp_path / "clip"), "--out", str(tmp_path / "owl2"),
            "--abstractor", '{"num_queries": 4, "num_hidden_layers": 1}', "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    model = Owl2Model.from_pretrained(tmp_path / "owl2")
    assert model.config.abstractor_config.num_queries == 4 and model.config.vision_config.hidden_size == 32
    assert model.encode_images(torch.randn(1, 3, 28, 28)).shape == (1, 5, 128)
