"""The command line with a OneLLM model folder: generate, chat and data check over several modalities."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl2.cli.main import main

FILES = ("clip.wav", "cloud.npy", "photo.png", "depth.png", "motion.npy", "betas.npy")


@pytest.fixture(scope="module")
def onellm_dir(tmp_path_factory) -> Path:
    """A random toy `OneLLMModel` with the synthetic tokenizer and the media config its sizes need."""
    from owl2.data import build_synthetic_tokenizer
    from owl2.processing import OneLLMProcessor
    from owl2.processing.media import OneLLMMediaProcessor
    from tests.models.onellm.conftest import toy_onellm

    directory = tmp_path_factory.mktemp("toy-onellm")
    model = toy_onellm()
    model.save_pretrained(directory)
    media = OneLLMMediaProcessor.from_model_config(model.config)
    OneLLMProcessor(build_synthetic_tokenizer(), media).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def media_files(tmp_path_factory) -> Path:
    """One small file per modality used here, written from seeded noise."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    with wave.open(str(folder / "clip.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((rng.standard_normal(16000 // 2) * 3000).astype("<i2").tobytes())  # 0.5 s
    points = np.concatenate([rng.standard_normal((1024, 3)), rng.uniform(0, 1, (1024, 3))], axis=1)  # the release needs 1024
    np.save(folder / "cloud.npy", points.astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "photo.png")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "depth.png")
    np.save(folder / "motion.npy", rng.standard_normal((6, 20)).astype(np.float32))
    np.save(folder / "betas.npy", rng.standard_normal((3, 50)).astype(np.float32))
    (folder / "empty.wav").write_bytes(b"")
    return folder


QUESTIONS = [
    {"id": "audio", "question": "what is this sound ?", "audio": "clip.wav"},
    {"id": "point", "question": "what is this ?", "point": "cloud.npy"},
    {"id": "text", "question": "what is two plus three ?"},
    {"id": "two", "question": "<|image|> and <|audio|> : what is there ?", "image": "photo.png", "audio": "clip.wav"},
    {"id": "depth", "question": "where is it ?", "rgbd": ["photo.png", "depth.png"]},
    {"id": "imu", "question": "describe the motion", "imu": "motion.npy"},
    {"id": "fmri", "question": "describe the scene", "fmri": "betas.npy"},
]


def test_generate_answers_every_modality_and_a_batch_answers_as_each_question_alone(onellm_dir, media_files, tmp_path):
    from owl2.eval.generation import answer_batch, load_pretrained
    from owl2.eval.inputs import read_questions

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    out = tmp_path / "answers.jsonl"
    args = ["generate", "--model", str(onellm_dir), "--input", str(questions), "--output", str(out)]
    assert main([*args, "--image-folder", str(media_files), "--batch-size", "4", "--max-new-tokens", "3", "--quiet"]) == 0
    answers = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(answers) == [q["id"] for q in QUESTIONS]
    assert answers["depth"]["rgbd"] == ["photo.png", "depth.png"] and "<|" not in answers["two"]["question"]

    model, processor = load_pretrained(onellm_dir)
    for question in read_questions(questions, media_files):
        (alone,) = answer_batch(model, processor, [question], max_new_tokens=3)
        assert answers[question.id]["answer"] == alone, question.id


def test_chat_takes_inputs_at_start_and_between_turns(onellm_dir, media_files, monkeypatch, capsys):
    from owl2.cli import chat as chat_module

    seen = []
    original = chat_module.Session.reply

    def spy(self, text, out=None):
        answer = original(self, text) if out is None else original(self, text, out)
        seen.append({m: len(items) for m, items in self.inputs.items()})
        return answer

    monkeypatch.setattr(chat_module.Session, "reply", spy)
    lines = ["what is this sound ?", f"/rgbd {media_files / 'photo.png'} {media_files / 'depth.png'}", "and this ?",
             f"/audio {media_files / 'empty.wav'}", "/quit"]  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    args = ["chat", "--model", str(onellm_dir), "--max-new-tokens", "3", "--audio", str(media_files / "clip.wav")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert seen == [{"audio": 1}, {"audio": 1, "rgbd": 1}], out
    assert "placeholders but" not in out
    assert "(rgbd" in out and "attached to your next message" in out
    assert "error:" in out and "empty.wav" in out  # a bad file is reported and the chat goes on


def test_data_check_reads_every_modality_and_names_the_bad_file(media_files, tmp_path, capsys):
    def chat(question):
        return [{"from": "human", "value": question}, {"from": "gpt", "value": "yes"}]

    records = [
        {"id": "ok", "audio": "clip.wav", "point": "cloud.npy", "conversations": chat("<|audio|> <|point|> same ?")},
        {"id": "pair", "rgbd": ["photo.png", "depth.png"], "conversations": chat("<|rgbd|> near ?")},
        {"id": "caption", "imu": "motion.npy", "caption": "walking"},
        {"id": "empty", "audio": "empty.wav", "conversations": chat("<|audio|> loud ?")},
        {"id": "count", "audio": "clip.wav", "conversations": chat("loud ?")},
        {"id": "half", "rgbd": "photo.png", "conversations": chat("<|rgbd|> near ?")},
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["data", "check", str(data), "--image-folder", str(media_files)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("line 4: ") and "empty.wav" in lines[0]
    assert lines[1] == "line 5: 0 <|audio|> placeholders but 1 audio inputs"
    assert lines[2].startswith("line 6: 'rgbd' must be a pair [image, map]")
    assert lines[-1].endswith("6 records, 3 good, 3 bad")


def test_data_check_takes_a_model_folders_sizes(onellm_dir, media_files, tmp_path, capsys):
    record = {"id": "scan", "fmri": "betas.npy", "caption": "a red circle"}  # 50 voxels: the toy's, not the release's
    data = tmp_path / "fmri.jsonl"
    data.write_text(json.dumps(record) + "\n")
    args = ["data", "check", str(data), "--image-folder", str(media_files)]
    assert main(args) == 1
    assert "betas.npy" in capsys.readouterr().out
    assert main([*args, "--model", str(onellm_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("1 records, 1 good, 0 bad")
    assert main([*args, "--model", str(tmp_path)]) == 2  # no media_config.json there
    assert "media_config.json" in capsys.readouterr().err
