"""OneLLMMediaProcessor: dispatch, batching, the item forms, save/load, and every modality's files through the toy
OneLLMModel's forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from owl2.processing.media import MEDIA_SUFFIXES, MediaConfig, MediaError, OneLLMMediaProcessor
from owl2.processing.media.audio import load_audio
from owl2.processing.media.imu import load_imu
from tests.models.onellm.conftest import ALL, TOY, toy_onellm
from tests.processing.media.conftest import write_video, write_wav
from tests.processing.media.test_image import noise_image
from tests.processing.media.test_rgbx import depth_map


@pytest.fixture()
def files(tmp_path):
    """One small file (or pair) per modality, valid for the toy config; the path of each."""
    noise_image(50, 40, seed=1).save(tmp_path / "cat.jpg")
    depth_map(50, 40).save(tmp_path / "cat_depth.png")
    depth_map(50, 40, mode="L").save(tmp_path / "cat_normal.png")
    write_video(tmp_path / "clip.mp4", frames=20, fps=10)
    write_wav(tmp_path / "dog.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "chair.npy", np.concatenate([rng.normal(size=(TOY.points, 3)), rng.random((TOY.points, 3))], 1))
    np.save(tmp_path / "walk.npy", rng.standard_normal((6, 60)))
    np.save(tmp_path / "scan.npy", rng.standard_normal((3, TOY.voxels)).astype(np.float32))
    return {
        "image": tmp_path / "cat.jpg",
        "video": tmp_path / "clip.mp4",
        "audio": tmp_path / "dog.wav",
        "point": tmp_path / "chair.npy",
        "rgbd": (tmp_path / "cat.jpg", tmp_path / "cat_depth.png"),
        "rgbn": (tmp_path / "cat.jpg", tmp_path / "cat_normal.png"),
        "fmri": tmp_path / "scan.npy",
        "imu": tmp_path / "walk.npy",
    }


def test_every_processed_modality_goes_through_the_toy_model(files):
    model = toy_onellm()
    processor = OneLLMMediaProcessor.from_model_config(model.config)
    inputs = {m: processor(m, [files[m]]) for m in ALL}
    expected = {m: (1, *processor.config.input_shape(m)) for m in ALL} | {"point": (1, TOY.points, 6)}  # as in the file
    assert {m: tuple(batch.shape) for m, batch in inputs.items()} == expected
    placeholders = [model.config.modality_token_index[m] for m in ALL]
    ids = torch.tensor([[1, *placeholders, 5, 6, 7]])
    with torch.no_grad():
        out = model(ids, modality_inputs=inputs)
    block = TOY.modality_tokens + 2
    assert out.logits.shape == (1, ids.shape[1] - len(ALL) + len(ALL) * block, TOY.vocab_size)
    assert torch.isfinite(out.logits).all()


def test_a_batch_stacks_the_loads_in_order(files, toy_media):
    processor = OneLLMMediaProcessor(toy_media)
    batch = processor("audio", [files["audio"], files["audio"]])
    assert batch.shape == (2, 1, 24, 34)
    torch.testing.assert_close(batch[1], load_audio(files["audio"], toy_media), rtol=0, atol=0)
    assert processor("image", files["image"]).shape == (1, 3, 28, 28)  # one path, not in a list


def test_item_forms_pil_images_pairs_and_imu_windows(files, toy_media):
    processor = OneLLMMediaProcessor(toy_media)
    opened = Image.open(files["image"])
    torch.testing.assert_close(processor.load("image", opened), processor.load("image", files["image"]))
    pair = [Image.open(p) for p in files["rgbd"]]
    torch.testing.assert_close(processor.load("rgbd", pair), processor.load("rgbd", files["rgbd"]))
    windowed = processor.load("imu", (files["imu"], 0.05, 0.2))
    torch.testing.assert_close(windowed, load_imu(files["imu"], toy_media, window=(0.05, 0.2)))
    torch.testing.assert_close(processor.load("imu", [str(files["imu"]), 0.05, 0.2]), windowed)  # as JSON has it
    torch.testing.assert_close(processor.load("rgbd", list(files["rgbd"])), processor.load("rgbd", files["rgbd"]))


def test_loaded_inputs_pass_through_once_their_shape_is_checked(files, toy_media):
    processor = OneLLMMediaProcessor(toy_media)
    loaded = [processor.load("video", files["video"]), processor.load("video", files["video"])]
    torch.testing.assert_close(processor("video", loaded), processor("video", [files["video"]] * 2), rtol=0, atol=0)
    assert processor("point", [torch.zeros(TOY.points, 6)]).shape == (1, TOY.points, 6)
    with pytest.raises(ValueError, match=r"a loaded audio input has shape \(1, 24, 33\); expected \(1, 24, 34\)"):
        processor("audio", [torch.zeros(1, 24, 33)])


def test_empty_batches_have_the_input_shape(toy_media):
    processor = OneLLMMediaProcessor(toy_media)
    assert processor("video", []).shape == (0, 3, 3, 28, 28)
    assert processor("fmri", []).shape == (0, 1, 50)


def test_point_clouds_of_different_sizes(tmp_path, toy_media):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(40, 6)))
    np.save(tmp_path / "b.npy", rng.normal(size=(30, 6)))
    expected = r"different sizes cannot be batched \(.*a.npy: 40, .*b.npy: 30\); expected one size, or set MediaConfig"
    with pytest.raises(MediaError, match=expected):
        OneLLMMediaProcessor(toy_media)("point", [tmp_path / "a.npy", tmp_path / "b.npy"])
    fixed = MediaConfig.from_model_config(toy_onellm().config, point_num_points=32)
    assert OneLLMMediaProcessor(fixed)("point", [tmp_path / "a.npy", tmp_path / "b.npy"]).shape == (2, 32, 6)


@pytest.mark.parametrize("modality, item, match", [
    ("text", "a.txt", "unknown modality 'text'"),
    ("rgbd", "only_one.jpg", r"a rgbd input is an \(image, map\) pair"),
    ("imu", ("walk.npy", 1.0), r"an imu input with a window is \(path, start_s, end_s\)"),
    ("audio", Image.new("RGB", (4, 4)), "a PIL image is an input for image, rgbd or rgbn, not audio"),
])  # fmt: skip
def test_wrong_item_forms(modality, item, match):
    with pytest.raises(ValueError, match=match):
        OneLLMMediaProcessor().load(modality, item)


def test_save_and_load(tmp_path, toy_media):
    OneLLMMediaProcessor(toy_media).save_pretrained(tmp_path)
    assert OneLLMMediaProcessor.from_pretrained(tmp_path).config == toy_media


def test_suffixes_cover_every_modality():
    assert OneLLMMediaProcessor.suffixes is MEDIA_SUFFIXES
    assert set(MEDIA_SUFFIXES) == set(ALL)
    assert MEDIA_SUFFIXES["video"] == (".mp4", ".avi", ".mov", ".mkv", ".webm")


def test_every_exported_name_resolves():
    import owl2.processing.media as media

    assert all(getattr(media, name) is not None for name in media.__all__)
    assert {"OneLLMMediaProcessor", "MediaConfig", "MediaError", "load_video", "transform_audio"} <= set(media.__all__)
