"""MediaConfig: the release's numbers, the sizes a model config implies, JSON round trip, validation, light import."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from owl2.config import OneLLMConfig
from owl2.processing.media.config import CONFIG_NAME, MEDIA_SUFFIXES, MediaConfig
from tests.conftest import REPO
from tests.models.onellm.conftest import TOY, onellm_config


def test_defaults_are_the_release_numbers():
    config = MediaConfig()
    assert (config.image_size, config.video_clips, config.video_crops, config.video_num_frames) == (224, 5, 3, 15)
    assert (config.audio_sample_rate, config.audio_num_mel_bins, config.audio_num_frames) == (16000, 128, 1024)
    assert (config.audio_mean, config.audio_std, config.audio_downmix) == (-4.2677393, 4.5689974, "first")
    assert (config.imu_rate, config.imu_num_samples, config.fmri_num_voxels) == (200, 400, 15724)
    assert config.point_num_points is None


def test_the_release_model_config_gives_the_defaults():
    assert MediaConfig.from_model_config(OneLLMConfig()) == MediaConfig()


def test_the_toy_preset_gives_the_toy_sizes(toy_media):
    assert toy_media == MediaConfig.from_model_config(onellm_config())
    assert toy_media.image_size == TOY.image_size == 28
    assert (toy_media.video_clips, toy_media.video_crops) == (1, 3)  # 3 frames: one clip, three crops
    assert (toy_media.audio_num_mel_bins, toy_media.audio_num_frames) == (TOY.mel_bins, TOY.audio_frames)
    assert (toy_media.imu_num_samples, toy_media.fmri_num_voxels) == (TOY.imu_samples, TOY.voxels)
    assert toy_media.point_min_points == max(TOY.point_groups, TOY.point_neighbours)
    assert toy_media.input_shape("video") == (3, 3, 28, 28)
    assert toy_media.input_shape("audio") == (1, 24, 34)


@pytest.mark.parametrize("frames, clips, crops", [(15, 5, 3), (3, 1, 3), (6, 2, 3), (4, 4, 1), (1, 1, 1), (2, 2, 1)])
def test_video_frames_split_into_clips_and_crops(frames, clips, crops):
    config = MediaConfig.from_model_config(onellm_config(video_num_frames=frames))
    assert (config.video_clips, config.video_crops, config.video_num_frames) == (clips, crops, frames)


def test_rgbx_frames_other_than_two_are_refused():
    with pytest.raises(ValueError, match="rgbx_num_frames is 3"):
        MediaConfig.from_model_config(onellm_config(rgbx_num_frames=3))


def test_overrides_win_over_the_model_config():
    assert MediaConfig.from_model_config(onellm_config(), audio_downmix="mean").audio_downmix == "mean"


def test_json_round_trip(tmp_path, toy_media):
    config = dataclasses.replace(toy_media, point_num_points=64, audio_downmix="mean")
    path = config.save_pretrained(tmp_path / "model")
    assert path.name == CONFIG_NAME == "media_config.json"
    assert json.loads(path.read_text())["point_num_points"] == 64
    assert MediaConfig.from_pretrained(tmp_path / "model") == config


def test_missing_keys_keep_their_defaults(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"image_size": 336}))
    assert MediaConfig.from_pretrained(tmp_path) == MediaConfig(image_size=336)


def test_unknown_keys_are_rejected_by_name(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"image_size": 224, "audio_mel_bins": 64, "zzz": 1}))
    with pytest.raises(ValueError, match=r"media_config.json: unknown MediaConfig keys \['audio_mel_bins', 'zzz'\]"):
        MediaConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "expected a JSON object"),
    ("{", "not valid JSON"),
    ('{"video_crops": 2}', "video_crops must be one of"),
    ('{"image_size": 0}', "positive integers"),
])  # fmt: skip
def test_bad_files_are_errors_naming_the_file(tmp_path, text, match):
    (tmp_path / CONFIG_NAME).write_text(text)
    with pytest.raises(ValueError, match=match) as caught:
        MediaConfig.from_pretrained(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in str(caught.value)


def test_a_folder_without_the_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no media_config.json"):
        MediaConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("fields", [
    {"image_size": -1}, {"image_size": 2.5}, {"point_num_points": 0}, {"audio_downmix": "left"},
    {"video_clip_duration": 0}, {"audio_std": -1.0}, {"imu_num_samples": True},
])  # fmt: skip
def test_invalid_values_are_refused(fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        MediaConfig(**fields)


def test_input_shapes_of_the_release():
    config = MediaConfig()
    shapes = {m: config.input_shape(m) for m in MEDIA_SUFFIXES}
    assert shapes == {"image": (3, 224, 224), "video": (15, 3, 224, 224), "rgbd": (2, 3, 224, 224),
                      "rgbn": (2, 3, 224, 224), "audio": (1, 128, 1024), "point": (0, 6), "imu": (6, 400),
                      "fmri": (1, 15724)}  # fmt: skip
    with pytest.raises(ValueError, match="unknown modality 'text'"):
        config.input_shape("text")


def test_the_config_the_suffixes_and_the_error_import_without_torch():
    code = (
        "from owl2.processing.media import MEDIA_SUFFIXES, MediaConfig, MediaError\n"
        "MediaConfig(); sorted(MEDIA_SUFFIXES)\n"
        "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not loaded & {"torch", "numpy", "av", "PIL"}, sorted(loaded & {"torch", "numpy", "av", "PIL"})
