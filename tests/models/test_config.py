import pytest
import torch

from owl2 import Owl2Config, Owl2Model
from tests.conftest import REPO

PRESET_7B = REPO / "configs" / "model" / "owl2-llama2-7b.json"


def test_7b_preset_has_the_official_parameter_count():
    config = Owl2Config.from_json_file(PRESET_7B)
    with torch.device("meta"):
        model = Owl2Model(config)
    assert sum(p.numel() for p in model.parameters()) == 8_197_859_328
    assert config.num_image_tokens == 65
    assert config.vision_config.grid_size == 32


def test_7b_preset_matches_the_release_dimensions():
    config = Owl2Config.from_json_file(PRESET_7B)
    vision, abstractor, text = config.vision_config, config.abstractor_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (1024, 24, 16)
    assert (vision.intermediate_size, vision.image_size, vision.patch_size, vision.hidden_act) == (4096, 448, 14, "quick_gelu")
    assert (abstractor.num_hidden_layers, abstractor.num_queries, abstractor.intermediate_size) == (6, 64, 2816)
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (4096, 32, 32000)
    assert config.image_token_index == -200


def test_config_round_trips_through_json(tmp_path):
    config = Owl2Config.from_json_file(REPO / "configs" / "model" / "owl2-toy.json")
    config.save_pretrained(tmp_path)
    loaded = Owl2Config.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.text_config).__name__ == "LlamaConfig"


def test_abstractor_width_must_match_the_vision_width():
    with pytest.raises(ValueError, match="abstractor_config.hidden_size .* must equal vision_config.hidden_size"):
        Owl2Config(vision_config={"hidden_size": 64, "num_attention_heads": 4}, abstractor_config={"hidden_size": 32})


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="image_size \\(50\\) must be a multiple of patch_size \\(14\\)"):
        Owl2Config(vision_config={"image_size": 50, "patch_size": 14})
