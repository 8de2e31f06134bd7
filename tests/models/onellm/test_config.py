"""OneLLM's tokenizer and projection configs: the release's defaults, token counts, validation, JSON."""

from __future__ import annotations

import pytest

from owl2.config import OneLLMProjectionConfig, OneLLMTokenizerConfig
from owl2.constants import ONELLM_MODALITIES


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
