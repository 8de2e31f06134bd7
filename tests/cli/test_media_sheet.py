"""`owl2.demo.media_sheet`: a picture sheet for every OneLLM modality, drawn from the synthetic OneLLM set
(and two hand-made PNGs for image, which that set does not have)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl2.config import OneLLMConfig
from owl2.data.synthetic_onellm import write_synthetic_onellm_dataset
from owl2.demo.media_sheet import MODALITIES, media_sheet
from owl2.processing.media import OneLLMMediaProcessor

TOY_PRESET = Path(__file__).resolve().parents[2] / "configs" / "model" / "onellm-toy.json"
SYNTHETIC = ("rgbd", "rgbn", "video", "audio", "point", "imu", "fmri")


@pytest.fixture(scope="module")
def onellm_set(tmp_path_factory) -> dict[str, Path]:
    config = OneLLMMediaProcessor.from_model_config(OneLLMConfig.from_json_file(TOY_PRESET)).config
    folder = tmp_path_factory.mktemp("onellm-sheet")
    return write_synthetic_onellm_dataset(folder, seed=0, media_config=config, num_per_modality=1, num_heldout=2)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sheet_items(paths: dict[str, Path], modality: str) -> list[dict]:
    """The two held-out questions of `modality` as sheet items, the first answered right, the second wrong."""
    folder = paths["image_folder"]
    answers = {r["id"]: r["answer"] for r in read_jsonl(paths[f"{modality}_references"])}
    items = []
    for k, record in enumerate(read_jsonl(paths[f"{modality}_heldout"])[:2]):
        value = record[modality]
        source = (folder / value[0], folder / value[1]) if isinstance(value, list) else folder / value
        answer = answers[record["id"]]
        items.append({"input": source, "question": record["question"].split("\n", 1)[-1], "answer": answer,
                      "reply": answer if k == 0 else "", "correct": k == 0})  # fmt: skip
    return items


def check_png(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 400 <= width <= 2000 and 200 <= height <= 1000, image.size
        colors = image.convert("RGB").getcolors(100000)
    assert colors is None or len(colors) > 10  # None: more colours than that


@pytest.mark.parametrize("modality", SYNTHETIC)
def test_media_sheet_draws_each_synthetic_modality(onellm_set, modality, tmp_path):
    items = sheet_items(onellm_set, modality)
    assert len(items) == 2
    out = media_sheet(modality, items, tmp_path / f"{modality}.png", columns=2)
    assert out == tmp_path / f"{modality}.png"
    check_png(out)


def test_media_sheet_draws_images(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(2):
        picture = tmp_path / f"picture_{k}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(picture)
        items.append({"input": picture, "question": "what color is the circle ?", "answer": "red",
                      "reply": "red" if k == 0 else "blue", "correct": k == 0})  # fmt: skip
    check_png(media_sheet("image", items, tmp_path / "image.png"))


def test_media_sheet_knows_every_modality():
    assert set(MODALITIES) == {"image", *SYNTHETIC}


def test_media_sheet_refuses_an_unknown_modality(tmp_path):
    with pytest.raises(ValueError, match=r"unknown modality 'smell'.*'audio'"):
        media_sheet("smell", [], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("modality", ["image", "audio", "imu", "video"])
def test_media_sheet_names_a_missing_file(tmp_path, modality):
    missing = tmp_path / "nowhere.bin"
    item = {"input": missing, "question": "q ?", "answer": "a", "reply": "a", "correct": True}
    with pytest.raises(ValueError, match="nowhere.bin"):
        media_sheet(modality, [item], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_media_sheet_names_a_missing_map_and_an_unreadable_file(onellm_set, tmp_path):
    item = sheet_items(onellm_set, "rgbd")[0]
    item["input"] = (item["input"][0], tmp_path / "gone_depth.png")
    with pytest.raises(ValueError, match="gone_depth.png"):
        media_sheet("rgbd", [item], tmp_path / "x.png")
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not a numpy file")
    item = {"input": broken, "question": "q ?", "answer": "a", "reply": "a", "correct": True}
    with pytest.raises(ValueError, match="broken.npy"):
        media_sheet("fmri", [item], tmp_path / "x.png")
