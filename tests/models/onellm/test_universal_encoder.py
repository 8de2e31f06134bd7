"""The universal encoder: frames averaged after CLIP, own position tables, errors, release parameter count."""

from __future__ import annotations

import re

import pytest
import torch
from torch.testing import assert_close

from owl2.config import OneLLMTokenizerConfig, Owl2VisionConfig
from owl2.models.universal_encoder import UniversalEncoder
from tests.models.onellm.conftest import ALL, TOY, toy_encoder, toy_inputs, tokenizer_config, vision_config


def test_every_modality_gives_its_tokens_plus_the_class_token():
    encoder = toy_encoder()
    grid = (TOY.image_size // TOY.patch_size) ** 2
    expected = {"image": grid, "video": grid, "rgbd": grid, "rgbn": grid, "audio": 5 * 8, "point": TOY.point_groups,
                "imu": TOY.imu_samples - TOY.imu_kernel + 1, "fmri": TOY.fmri_tokens}  # fmt: skip
    with torch.no_grad():
        for modality in ALL:
            assert encoder(toy_inputs(modality), modality).shape == (2, 1 + expected[modality], TOY.clip_width)
            assert encoder.num_tokens(modality) == 1 + expected[modality]


def test_video_is_the_mean_of_its_frames_encoded_as_images():
    encoder = toy_encoder()
    video = toy_inputs("video")
    with torch.no_grad():
        frames = torch.stack([encoder(video[:, t], "image") for t in range(TOY.video_frames)], dim=1)
        assert_close(encoder(video, "video"), frames.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_only_tokenized_modalities_get_a_position_table_of_their_own():
    encoder = toy_encoder(modalities=("image", "audio", "rgbd", "imu"))
    assert sorted(encoder.pos_embeds) == ["audio", "imu"] and sorted(encoder.tokenizers) == ["audio", "imu"]
    assert encoder.pos_embeds["audio"].shape == (1 + 40, TOY.clip_width)
    with pytest.raises(ValueError, match=r"built for \('image', 'audio', 'rgbd', 'imu'\), not 'point'"):
        encoder(toy_inputs("point"), "point")


def test_position_tables_start_from_the_release_init():
    encoder = UniversalEncoder(vision_config(), tokenizer_config(audio_num_frames=1024), ["audio"])
    table = encoder.pos_embeds["audio"]
    assert table.shape[0] == 1 + 5 * 255  # (1024 - 6) // 4 + 1 time patches
    assert abs(table.std().item() - 0.02) < 0.002 and abs(table.mean().item()) < 0.002


def test_gradients_reach_the_tokenizer_and_the_position_table():
    encoder = toy_encoder().train()
    encoder.clip.set_grad_checkpointing(True)
    encoder(toy_inputs("imu"), "imu").square().mean().backward()
    assert encoder.tokenizers["imu"].proj.weight.grad.abs().sum() > 0
    assert encoder.pos_embeds["imu"].grad.abs().sum() > 0
    assert encoder.pos_embeds["audio"].grad is None


@pytest.mark.parametrize(
    ("modality", "shape", "expected"),
    [
        ("image", (2, 3, 32, 28), "(N, 3, 28, 28)"),
        ("video", (2, 3, 28, 28), f"(N, {TOY.video_frames}, 3, 28, 28)"),
        ("rgbd", (2, 3, 3, 28, 28), "(N, 2, 3, 28, 28)"),
        ("rgbn", (2, 1, 3, 28, 28), "(N, 2, 3, 28, 28)"),
        ("imu", (2, 6, 21), f"(N, 6, {TOY.imu_samples})"),
    ],
)
def test_a_wrong_input_shape_is_refused_naming_the_modality_and_both_shapes(modality, shape, expected):
    message = re.escape(f"{modality} input must have shape {expected} ") + ".*" + re.escape(f", got {tuple(shape)}")
    with pytest.raises(ValueError, match=message):
        toy_encoder()(torch.zeros(shape), modality)


def test_unknown_or_repeated_modalities_are_refused():
    with pytest.raises(ValueError, match="modalities must be distinct names"):
        UniversalEncoder(vision_config(), tokenizer_config(), ["image", "depth"])
    with pytest.raises(ValueError, match="modalities must be distinct names"):
        UniversalEncoder(vision_config(), tokenizer_config(), ["audio", "audio"])


def test_release_sizes_have_the_release_parameter_count():
    clip = Owl2VisionConfig(image_size=224, layer_norm_eps=1e-5)  # open_clip's ViT-L/14, OpenAI weights
    with torch.device("meta"):
        encoder = UniversalEncoder(clip, OneLLMTokenizerConfig(), ALL)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # CLIP ViT-L/14 at 224 without its output projection: conv 3*14*14*1024, class token 1024, 257 x 1024
    # positions, ln_pre and ln_post 2 x 2048, and 24 blocks of 12,596,224.
    assert count(encoder.clip) == 602_112 + 1_024 + 263_168 + 4_096 + 24 * 12_596_224 == 303_179_776
    tokenizers = {"audio": 1024 * 256 + 1024, "point": 1024 * 6 + 1024, "imu": 1024 * 6 * 10,
                  "fmri": 15724 * 8192 + 8192}  # fmt: skip  (fMRI alone: 128.8M)
    assert {m: count(t) for m, t in encoder.tokenizers.items()} == tokenizers
    assert {m: tuple(t.shape) for m, t in encoder.pos_embeds.items()} == {
        "audio": (1213, 1024), "point": (1025, 1024), "fmri": (9, 1024), "imu": (392, 1024)
    }  # fmt: skip
    assert count(encoder) - count(encoder.clip) == 129_150_976 + 2_639 * 1024 == 131_853_312
