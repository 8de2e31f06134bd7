"""The synthetic OneLLM data set: deterministic, valid records, loadable at the toy sizes, and every answer
recoverable from its file by a measurement of the test's own (FFT peaks, envelopes, centroids, geometry ...)."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl2.config import OneLLMConfig
from owl2.data.checks import iter_problems
from owl2.data.records import RecordFile
from owl2.data.synthetic import COLORS, POSITIONS, SHAPES
from owl2.data.synthetic_onellm import (
    GENERATORS,
    build_onellm_tokenizer,
    onellm_vocabulary,
    write_synthetic_onellm_dataset,
)
from owl2.eval.answers import iter_jsonl, read_reference_records
from owl2.eval.inputs import read_questions
from owl2.processing.media.config import MediaConfig
from owl2.processing.templates import PLACEHOLDERS
from tests.models.onellm.conftest import TOY_PRESET

MODALITIES = tuple(GENERATORS)
NUM_HELDOUT = 12  # every question type of every modality at least three times


@pytest.fixture(scope="module")
def toy_config() -> OneLLMConfig:
    return OneLLMConfig.from_json_file(TOY_PRESET)


@pytest.fixture(scope="module")
def toy_media(toy_config) -> MediaConfig:
    return MediaConfig.from_model_config(toy_config)


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory, toy_media) -> dict[str, Path]:
    return write_synthetic_onellm_dataset(
        tmp_path_factory.mktemp("onellm"), seed=0, media_config=toy_media, num_per_modality=4, num_heldout=NUM_HELDOUT
    )


def heldout(paths: dict[str, Path], modality: str) -> list[tuple[Path | tuple[Path, Path], str, str, str]]:
    """`(input path(s), question, type, answer)` of every held-out question of `modality`."""
    folder = paths["image_folder"]
    answers = {str(r["id"]): r["answer"] for _, r in iter_jsonl(paths[f"{modality}_references"])}
    items = []
    for _, record in iter_jsonl(paths[f"{modality}_heldout"]):
        value = record[modality]
        path = (folder / value[0], folder / value[1]) if isinstance(value, list) else folder / value
        items.append((path, record["question"], record["question_type"], answers[record["id"]]))
    return items


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the data set as a whole ---------------------------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path, toy_media):
    def write(name: str, seed: int) -> dict[str, Path]:
        return write_synthetic_onellm_dataset(tmp_path / name, seed, toy_media, num_per_modality=2, num_heldout=2)

    first, _, _ = write("a", 3), write("b", 3), write("c", 4)
    a, b, c = (all_files(tmp_path / name) for name in "abc")
    assert len(a) > 7 * 6 and a == b
    differing = {name for name in a if a[name] != c.get(name)}
    assert {name.split("/")[0] for name in differing} >= set(MODALITIES)  # every modality's files change with the seed
    kinds = ("align", "instruct", "heldout", "references", "captions", "caption_references", "files")
    assert set(first) == {f"{m}_{k}" for m in MODALITIES for k in kinds} | {"image_folder", "tokenizer"}


def test_records_pass_the_release_checks(tmp_path):
    """`owl2 data check` decodes with the release's sizes, so the set is written at those sizes here."""
    paths = write_synthetic_onellm_dataset(tmp_path, seed=1, num_per_modality=1, num_heldout=0)
    for modality in MODALITIES:
        for split in ("align", "instruct"):
            problems = list(iter_problems(RecordFile(paths[f"{modality}_{split}"]), paths["image_folder"]))
            assert problems == [], (modality, split)


def test_toy_records_pass_the_checks_but_fmri(toy_set):
    """At the toy sizes every file passes the release's checks but fMRI's 50 voxels (the release wants 15724)."""
    for modality in MODALITIES:
        problems = list(iter_problems(RecordFile(toy_set[f"{modality}_align"]), toy_set["image_folder"]))
        if modality == "fmri":
            assert problems and all("15724" in p.reason for p in problems)
        else:
            assert problems == [], modality


def test_heldout_reads_as_generate_questions_and_eval_references(toy_set):
    for modality, (_, qtypes) in GENERATORS.items():
        questions = read_questions(toy_set[f"{modality}_heldout"])
        references = read_reference_records(toy_set[f"{modality}_references"])
        assert [q.id for q in questions] == list(references) and len(questions) == NUM_HELDOUT
        assert all(list(q.inputs) == [modality] for q in questions)
        assert {r.type for r in references.values()} == set(qtypes)
        assert {r.modality for r in references.values()} == {modality}


def test_every_word_is_in_the_vocabulary_and_fits_the_toy_model(toy_set, toy_config):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_set["tokenizer"])
    assert len(tokenizer) == len(onellm_vocabulary()) + 3 == len(build_onellm_tokenizer())
    assert len(tokenizer) <= toy_config.text_config.vocab_size
    texts = []
    for modality in MODALITIES:
        texts += [r["caption"] for _, r in iter_jsonl(toy_set[f"{modality}_align"])]
        instruct = [r for _, r in iter_jsonl(toy_set[f"{modality}_instruct"])]
        texts += [turn["value"].split("\n")[-1] for r in instruct for turn in r["conversations"]]
        texts += [r["question"].split("\n")[-1] for _, r in iter_jsonl(toy_set[f"{modality}_heldout"])]
        texts += [r["answer"] for _, r in iter_jsonl(toy_set[f"{modality}_references"])]
    unknown = {text for text in texts if tokenizer.unk_token_id in tokenizer(text)["input_ids"]}
    assert not unknown


def test_every_file_loads_to_the_toy_shapes(toy_set, toy_config, toy_media):
    from owl2.processing.media import OneLLMMediaProcessor

    processor = OneLLMMediaProcessor.from_model_config(toy_config)
    folder = toy_set["image_folder"]
    for modality in MODALITIES:
        splits = ("align", "instruct", "heldout")
        records = [r for split in splits for _, r in iter_jsonl(toy_set[f"{modality}_{split}"])]
        for record in records:
            value = record[modality]
            item = [folder / v for v in value] if isinstance(value, list) else folder / value
            shape = toy_media.input_shape(modality) if modality != "point" else (1024, 6)  # the cloud's own size
            assert tuple(processor(modality, [item]).shape) == (1, *shape), (modality, value)


# --- each answer, measured -----------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as file:
        return np.frombuffer(file.readframes(file.getnframes()), dtype="<i2") / 32768, file.getframerate()


def beep_segments(samples: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """`(start, end)` of each stretch where the 5 ms moving average of |x| exceeds a fifth of its peak."""
    width = int(0.005 * rate)
    envelope = np.convolve(np.abs(samples), np.ones(width) / width, mode="same")
    loud = np.concatenate([[False], envelope > 0.2 * envelope.max(), [False]]).astype(int)
    edges = np.flatnonzero(np.diff(loud))
    return list(zip(edges[::2], edges[1::2]))


def test_audio_answers(toy_set):
    for path, _, qtype, answer in heldout(toy_set, "audio"):
        samples, rate = read_wav(path)
        assert rate == 16000 and 0.3 <= len(samples) / rate <= 1.0
        segments = beep_segments(samples, rate)
        if qtype == "pitch":
            spectrum = np.abs(np.fft.rfft(samples))
            peak = np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]
            assert ("low" if peak < 1000 else "high") == answer, (path, peak)
        elif qtype == "count":
            assert ["zero", "one", "two", "three"][len(segments)] == answer, path
        else:
            start, end = segments[0]
            middle = (start + end) // 2
            crossings = [np.count_nonzero(np.diff(np.sign(samples[a:b]))) for a, b in ((start, middle), (middle, end))]
            assert ("rising" if crossings[1] > crossings[0] else "falling") == answer, (path, crossings)


def decode_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


LUMA = np.array([0.299, 0.587, 0.114])  # BT.601


def nearest_color(rgb: np.ndarray) -> str:
    return min(COLORS, key=lambda name: np.abs(np.array(COLORS[name], dtype=float) - rgb).sum())


def test_video_answers(toy_set):
    for path, question, qtype, answer in heldout(toy_set, "video"):
        frames = decode_frames(path).astype(float)  # (T, H, W, 3)
        assert frames.shape[1:] == (64, 64, 3) and len(frames) >= 16
        background = frames[0, 0, 0]
        distance = np.abs(frames - background).sum(axis=-1)
        foreground = distance > 60  # the shape and its trail
        strongest = distance[-1] >= 0.9 * distance[-1].max()  # the shape's own pixels, not its trail's
        color = nearest_color(np.median(frames[-1][strongest], axis=0))
        # luma is stored at full resolution (chroma at half): how far from the background's, as a share of the shape's
        luma = frames @ LUMA
        share = (luma - background @ LUMA) / (np.array(COLORS[color], dtype=float) @ LUMA - background @ LUMA)
        solid = share > 0.75  # the shape alone; its trail's copies are at most half-way
        if qtype == "color":
            assert color == answer
        elif qtype == "shape":
            assert kind_of(solid[-1]) == answer, path
        else:
            def centroid(mask):
                ys, xs = np.nonzero(mask)
                return np.array([xs.mean(), ys.mean()])

            def direction(step):
                axis = int(np.argmax(np.abs(step)))
                return (("left", "right"), ("up", "down"))[axis][int(step[axis] > 0)]

            assert direction(centroid(solid[-1]) - centroid(solid[0])) == answer, path
            # the one frame the toy's single clip keeps: the shape lies ahead of its trail
            assert direction(centroid(solid[0]) - centroid(foreground[0])) == answer, path


def test_point_answers(toy_set):
    for path, _, qtype, answer in heldout(toy_set, "point"):
        cloud = np.load(path)
        assert cloud.shape == (1024, 6) and cloud.dtype == np.float32
        assert (0 <= cloud[:, 3:]).all() and (cloud[:, 3:] <= 1).all()
        if qtype == "color":
            assert nearest_color(cloud[:, 3:].mean(axis=0) * 255) == answer
            continue
        xyz = cloud[:, :3] - (cloud[:, :3].min(axis=0) + cloud[:, :3].max(axis=0)) / 2  # the bounding box's centre
        radius = np.linalg.norm(xyz, axis=1)
        box = np.abs(xyz).max(axis=1)
        if radius.std() / radius.mean() < 0.02:
            kind = "sphere"
        elif box.std() / box.mean() < 0.05:
            kind = "cube"
        else:
            kind = "cone"
        assert kind == answer, path


def test_imu_answers(toy_set, toy_media):
    for path, _, _, answer in heldout(toy_set, "imu"):
        signal = np.load(path)
        assert signal.shape == (6, toy_media.imu_num_samples)
        vertical = signal[2] - signal[2].mean()
        if abs(signal[5].mean()) > 0.5:
            motion = "turning"
        elif vertical.std() > 0.5:
            cycles = int(np.abs(np.fft.rfft(vertical)).argmax())  # the strongest period, in cycles per window
            assert 3 <= cycles <= 5, path
            motion = "walking"
        else:
            motion = "still"
        assert motion == answer, path


def shape_mask(image_path: Path, color: str) -> np.ndarray:
    return (np.asarray(Image.open(image_path).convert("RGB")) == COLORS[color]).all(axis=-1)


def kind_of(mask: np.ndarray) -> str:
    """By how much of its bounding box the shape fills: square ~1, circle ~0.79, triangle ~0.5."""
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    return SHAPES[int(np.argmin([abs(fill - f) for f in (0.79, 1.0, 0.5)]))]


def image_answer(image: Path, qtype: str, text: str) -> str | None:
    """The answer to an image-set question (colour, shape, position) read off the image, or None for other types."""
    size = Image.open(image).size[0]
    masks = {color: mask for color in COLORS if (mask := shape_mask(image, color)).sum() > 4}
    kinds = {color: kind_of(mask) for color, mask in masks.items()}
    if qtype == "color":
        kind = re.match(r"what color is the (\w+)", text).group(1)
        return next(color for color, k in kinds.items() if k == kind)
    if qtype == "shape":
        return kinds[re.match(r"what shape is the (\w+)", text).group(1)]
    if qtype == "position":
        ys, xs = np.nonzero(masks[re.match(r"where is the (\w+) ", text).group(1)])
        return POSITIONS[2 * int(ys.mean() >= size / 2) + int(xs.mean() >= size / 2)]
    return None


def test_rgbd_answers(toy_set, toy_media):
    for (image, depth), question, qtype, answer in heldout(toy_set, "rgbd"):
        assert Image.open(image).size == (toy_media.image_size,) * 2
        text = question.split("\n")[-1]
        if qtype == "depth":
            color = re.match(r"is the (\w+) \w+ near or far", text).group(1)
            brightness = np.asarray(Image.open(depth), dtype=float)[shape_mask(image, color)].mean()
            assert ("near" if brightness > 150 else "far") == answer, (image, brightness)
        else:
            assert image_answer(image, qtype, text) == answer, (image, question)


def test_rgbn_answers(toy_set):
    for (image, normal), question, qtype, answer in heldout(toy_set, "rgbn"):
        text = question.split("\n")[-1]
        if qtype == "facing":
            color = re.match(r"where is the (\w+) \w+ facing", text).group(1)
            normals = np.asarray(Image.open(normal).convert("RGB"), dtype=float) / 255 * 2 - 1  # x right, y up, z out
            x = normals[shape_mask(image, color)][:, 0].mean()
            assert ("left" if x < 0 else "right") == answer, (image, x)
        else:
            assert image_answer(image, qtype, text) == answer, (image, question)


def test_fmri_answers(toy_set, toy_media):
    from owl2.data.synthetic_media.fmri import ATTRIBUTES, projection

    weights = projection(toy_media.fmri_num_voxels)  # (attributes, voxels)
    for path, question, qtype, answer in heldout(toy_set, "fmri"):
        betas = np.load(path)
        assert betas.shape == (3, toy_media.fmri_num_voxels)
        code = np.linalg.lstsq(weights.T, betas.mean(axis=0), rcond=None)[0]
        present = [name for name, value in zip(ATTRIBUTES, code) if value > 0.5]
        scene = {}
        for name in present:  # "top left red", "top left circle": the colour and the kind at each quadrant
            position, word = name.rsplit(" ", 1)
            scene.setdefault(position, {})["kind" if word in SHAPES else "color"] = word
        text = question.split("\n")[-1]
        if qtype == "count":
            assert ["zero", "one", "two", "three"][len(scene)] == answer
        elif qtype == "color":
            kind = re.match(r"what color is the (\w+)", text).group(1)
            assert [s["color"] for s in scene.values() if s["kind"] == kind] == [answer], path
        elif qtype == "shape":
            color = re.match(r"what shape is the (\w+)", text).group(1)
            assert [s["kind"] for s in scene.values() if s["color"] == color] == [answer], path
        elif qtype == "position":
            color, kind = re.match(r"where is the (\w+) (\w+)", text).groups()
            assert [p for p, s in scene.items() if s == {"color": color, "kind": kind}] == [answer], path
        else:
            color, kind = re.match(r"is there a (\w+) (\w+)", text).groups()
            assert ("yes" if {"color": color, "kind": kind} in scene.values() else "no") == answer, path


def test_heldout_inputs_are_also_asked_for_their_caption(toy_set):
    for modality in MODALITIES:
        questions = [r for _, r in iter_jsonl(toy_set[f"{modality}_heldout"])]
        captions = [r for _, r in iter_jsonl(toy_set[f"{modality}_captions"])]
        references = [r for _, r in iter_jsonl(toy_set[f"{modality}_caption_references"])]
        assert [c[modality] for c in captions] == [q[modality] for q in questions]  # the same held-out inputs
        assert all(c["question"] == PLACEHOLDERS[modality] for c in captions)  # the alignment prompt
        assert [r["id"] for r in references] == [c["id"] for c in captions]
        assert all(r["question_type"] == "caption" and r["modality"] == modality and r["answer"] for r in references)
