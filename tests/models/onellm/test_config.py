"""OneLLM's configs: the release's defaults, token counts, placeholder ids, validation, the presets, JSON."""

from __future__ import annotations

import pytest

from owl2.config import OneLLMConfig, OneLLMProjectionConfig, OneLLMTokenizerConfig
from owl2.constants import IMAGE_TOKEN_INDEX, ONELLM_MODALITIES, ONELLM_MODALITY_TOKEN_INDEX
from tests.conftest import REPO
from tests.models.onellm.conftest import TOY_PRESET, onellm_config


def test_tokenizer_defaults_are_the_release_token_counts():
    config = OneLLMTokenizerConfig()
    assert config.audio_grid == (12, 101)  # (128 - 16) // 10 + 1, (1024 - 16) // 10 + 1
    counts = {m: config.num_tokens(m, clip_grid_size=16) for m in ONELLM_MODALITIES}
    # The release's position tables: audio 1213, point 1025, fmri 9, imu 392 rows; CLIP's 257 for the rest.
    assert counts == {"image": 256, "video": 256, "rgbd": 256, "rgbn": 256, "audio": 1212, "point": 1024,
                      "fmri": 8, "imu": 391}  # fmt: skip
    assert config.point_sample_on == "xyz" and config.point_group_size == 32
    assert (config.video_num_frames, config.rgbx_num_frames) == (15, 2)


def test_projection_defaults_are_the_release_sizes():
    config = OneLLMProjectionConfig()
    assert (config.num_experts, config.num_hidden_layers) == (3, 8)
    assert (config.hidden_size, config.num_attention_heads) == (1024, 16)
    assert config.intermediate_size == 256 * -(-int(2 * 4 * 1024 / 3) // 256) == 2816  # LLaMA's FeedForward rule
    assert (config.rms_norm_eps, config.num_modality_tokens, config.router_hidden_size) == (1e-5, 30, 4096)
    assert config.router_activation == "sigmoid"


def test_pixel_modalities_need_the_clip_grid():
    with pytest.raises(ValueError, match="video tokens is CLIP's patch grid"):
        OneLLMTokenizerConfig().num_tokens("video")
    with pytest.raises(ValueError, match="unknown OneLLM modality 'text'"):
        OneLLMTokenizerConfig().num_tokens("text")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OneLLMTokenizerConfig(point_sample_on="normal"), 'point_sample_on must be "xyz" or "rgb"'),
        (lambda: OneLLMTokenizerConfig(point_num_features=3, point_sample_on="rgb"), r"at least 6 to sample on 'rgb'"),
        (lambda: OneLLMTokenizerConfig(audio_num_mel_bins=8), r"spectrogram \(8 x 1024\) must be at least"),
        (lambda: OneLLMTokenizerConfig(imu_num_samples=4), r"imu_num_samples \(4\) must be at least"),
        (lambda: OneLLMProjectionConfig(router_activation="relu"), 'router_activation must be "sigmoid" or "softmax"'),
        (lambda: OneLLMProjectionConfig(hidden_size=100), r"hidden_size \(100\) must be a multiple"),
        (lambda: OneLLMProjectionConfig(num_experts=0), "at least one expert"),
    ],
)
def test_invalid_configs_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "config", [OneLLMTokenizerConfig(point_sample_on="rgb"), OneLLMProjectionConfig(router_activation="softmax")]
)
def test_configs_round_trip_through_json(config, tmp_path):
    config.save_pretrained(tmp_path)
    loaded = type(config).from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


# -- the whole model's config ----------------------------------------------------------------------------------
def test_onellm_defaults_are_the_release():
    config = OneLLMConfig()
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (1024, 24, 14, 224)
    assert (vision.layer_norm_eps, vision.hidden_act) == (1e-5, "quick_gelu")  # open_clip's ViT-L/14
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size, text.rms_norm_eps) == (4096, 32, 32000, 1e-5)
    assert config.modalities == list(ONELLM_MODALITIES)
    assert config.modality_token_index == dict(ONELLM_MODALITY_TOKEN_INDEX)
    assert config.modality_token_index["image"] == IMAGE_TOKEN_INDEX == -200
    assert sorted(config.modality_token_index.values()) == list(range(-207, -199))
    assert config.num_tokens_per_input == 32  # start tag, 30 modality tokens, end tag: the release's prefix_len


def test_a_partial_sub_config_starts_from_the_onellm_defaults():
    config = OneLLMConfig(vision_config={"num_hidden_layers": 2}, text_config={"num_hidden_layers": 2},
                          modalities=("audio", "image"))  # fmt: skip
    assert (config.vision_config.num_hidden_layers, config.vision_config.image_size) == (2, 224)
    assert config.vision_config.layer_norm_eps == 1e-5 and config.text_config.rms_norm_eps == 1e-5
    assert config.modalities == ["audio", "image"]
    assert config.modality_token_index == {"audio": -202, "image": -200}  # the configured modalities' entries


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modalities": ["image", "depth"]}, r"modalities must be distinct names .* \(unknown: \['depth'\]\)"),
        ({"modalities": ["audio", "audio"]}, r"modalities must be distinct names .* got \['audio', 'audio'\]"),
        ({"modalities": ["image"], "modality_token_index": {"image": -200, "sound": -3}},
         r"modality_token_index names unknown modalities \['sound'\]"),
        ({"modalities": ["image", "audio"], "modality_token_index": {"image": -200}}, r"\(missing: \['audio'\]\)"),
        ({"modalities": ["image"], "modality_token_index": {"image": -200, "audio": -202}},
         r"\(not in modalities: \['audio'\]\)"),
        ({"modalities": ["image", "audio"], "modality_token_index": {"image": -200, "audio": -200}},
         r"gives one placeholder id to several modalities: {-200: \['image', 'audio'\]}"),
        ({"modalities": ["image"], "modality_token_index": {"image": 7}}, r"must be negative .* got {'image': 7}"),
    ],
)  # fmt: skip
def test_invalid_modalities_and_placeholder_ids_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneLLMConfig(**kwargs)


def test_the_toy_preset_holds_the_toy_dimensions():
    preset, toy = OneLLMConfig.from_json_file(TOY_PRESET), onellm_config()
    for key in ("vision_config", "tokenizer_config", "projection_config", "text_config"):
        assert getattr(preset, key).to_dict() == getattr(toy, key).to_dict(), key
    assert (preset.modalities, preset.modality_token_index) == (toy.modalities, toy.modality_token_index)


def test_the_release_preset_holds_the_release_sizes():
    config = OneLLMConfig.from_json_file(REPO / "configs" / "model" / "onellm-7b.json")
    defaults = OneLLMConfig()
    for key in ("vision_config", "projection_config"):
        assert getattr(config, key).to_dict() == getattr(defaults, key).to_dict(), key
    tokenizers = OneLLMTokenizerConfig(point_sample_on="rgb")  # the released weights group points on colour
    assert config.tokenizer_config.to_dict() == tokenizers.to_dict()
    text = config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads) == \
        (4096, 11008, 32, 32)  # fmt: skip
    assert (text.num_key_value_heads, text.vocab_size, text.rms_norm_eps, text.tie_word_embeddings) == \
        (32, 32000, 1e-5, False)  # fmt: skip
    assert config.modality_token_index == dict(ONELLM_MODALITY_TOKEN_INDEX)


def test_the_onellm_config_round_trips_through_json(tmp_path):
    config = onellm_config(modalities=("imu", "video"), point_sample_on="rgb")
    config.save_pretrained(tmp_path)
    loaded = OneLLMConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.text_config).__name__ == "LlamaConfig" and loaded.modalities == ["imu", "video"]
