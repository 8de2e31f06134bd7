"""Scores overall, per type and per modality; the modality of a record; `owl2 eval` with the new metrics."""

from __future__ import annotations

import json

import pytest

from owl2.cli.main import main
from owl2.eval import METRICS, record_modality, score


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_score_per_type_and_missing_prediction():
    refs = {"a": ["red"], "b": ["two"], "c": ["yes"], "d": ["no"]}
    types = {"a": "color", "b": "count", "c": "yesno", "d": "yesno"}
    preds = {"a": "Red.", "b": "2", "c": "yes", "d": "yes", "extra": "ignored"}
    scores = score(preds, refs, types, metric="exact")
    assert scores.overall == 0.75 and scores.count == 4
    assert scores.per_type == {"color": 1.0, "count": 1.0, "yesno": 0.5}
    table = scores.table("exact").splitlines()
    assert table[0].split() == ["type", "n", "exact"]
    assert table[-1].split() == ["overall", "4", "75.00%"]
    with pytest.raises(KeyError, match="'b'"):
        score({"a": "red"}, refs)
    with pytest.raises(KeyError, match="unknown metric"):
        score(preds, refs, metric="meteor")


def test_score_per_modality_beside_per_type():
    refs = {"1": ["cat"] * 10, "2": ["dog"] * 10, "3": ["yes"] * 10, "4": ["no"] * 10}
    preds = {"1": "cat", "2": "Dog", "3": "yes", "4": "no"}
    scores = score(preds, refs, {"1": "what", "2": "what"}, metric="vqa", modalities={"1": "image", "2": "image", "3": "audio", "4": "text"})
    assert scores.per_modality == {"image": 0.5, "audio": 1.0, "text": 1.0}
    assert scores.modality_counts == {"image": 2, "audio": 1, "text": 1}
    sections = [block.splitlines() for block in scores.table("vqa").split("\n\n")]
    assert [line.split() for line in sections[0]] == [["type", "n", "vqa"], ["what", "2", "50.00%"], ["overall", "4", "75.00%"]]
    assert [line.split()[0] for line in sections[1]] == ["modality", "audio", "image", "text", "overall"]


@pytest.mark.parametrize(
    "record, modality",
    [
        ({"id": 1, "modality": "audio", "image": "x.png"}, "audio"),  # named outright
        ({"id": 1, "image": "x.png"}, "image"),
        ({"id": 1, "video": "v.mp4", "audio": "a.wav"}, "video+audio"),
        ({"id": 1, "rgbd": ["x.png", "d.png"]}, "rgbd"),
        ({"id": 1, "image": []}, None),
        ({"id": 1}, None),
    ],
)
def test_record_modality(record, modality):
    assert record_modality(record) == modality


def test_eval_reports_per_modality_from_either_file(tmp_path, capsys):
    refs = write(tmp_path / "refs.jsonl", [
        {"id": "1", "answers": ["cat"] * 10, "modality": "image"},
        {"id": "2", "answers": ["yes"] * 10},
        {"id": "3", "answers": ["no"] * 10},
    ])  # fmt: skip
    preds = write(tmp_path / "preds.jsonl", [
        {"id": "1", "answer": "cat"},
        {"id": "2", "answer": "Yes", "audio": "clip.wav"},  # owl2 generate copies the inputs
        {"id": "3", "answer": "no"},
    ])  # fmt: skip
    out = tmp_path / "scores.json"
    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--output", str(out)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert ["audio", "1", "0.00%"] in rows and ["image", "1", "100.00%"] in rows and ["text", "1", "100.00%"] in rows
    result = json.loads(out.read_text())
    assert result["metric"] == "vqa" and result["score"] == pytest.approx(2 / 3)
    assert result["per_modality"] == {"image": 1.0, "audio": 0.0, "text": 1.0}


def test_eval_choice_names_a_bad_reference_by_file_and_line(tmp_path, capsys):
    refs = write(tmp_path / "refs.jsonl", [{"id": "1", "answer": "B"}, {"id": "2", "answer": "a dog"}])
    preds = write(tmp_path / "preds.jsonl", [{"id": "1", "answer": "B"}, {"id": "2", "answer": "A"}])
    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--metric", "choice"]) == 2
    assert "refs.jsonl:2: reference 'a dog' is not an option letter" in capsys.readouterr().err


def test_eval_caption_metric_prints_100_times_the_score(tmp_path, capsys):
    refs = write(tmp_path / "refs.jsonl", [
        {"id": "1", "answers": ["A cat on a mat.", "The cat sits on the mat."]},
        {"id": "2", "answers": ["A dog in the park.", "Two dogs play."]},
    ])  # fmt: skip
    preds = write(tmp_path / "preds.jsonl", [{"id": "1", "answer": "A cat on the mat."}, {"id": "2", "answer": "A dog."}])
    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--metric", "rouge_l"]) == 0
    overall = capsys.readouterr().out.splitlines()[-1].split()
    expected = METRICS["rouge_l"].corpus(["A cat on the mat.", "A dog."], [["A cat on a mat.", "The cat sits on the mat."],
                                                                         ["A dog in the park.", "Two dogs play."]])  # fmt: skip
    assert overall == ["overall", "2", f"{100 * expected:.2f}"] and "%" not in overall[-1]
