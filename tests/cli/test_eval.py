"""`owl2 eval`: per-type table from JSONL files, VQA-style `answers` lists, bad input."""

from __future__ import annotations

import json

import pytest

from owl2.cli.main import main


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_eval_prints_per_type_table_and_writes_json(tmp_path, capsys):
    refs = write(tmp_path / "refs.jsonl", [
        {"id": "1", "answer": "two", "question_type": "count"},
        {"id": "2", "answers": [{"answer": "dog"}] * 3 + [{"answer": "cat"}] * 7, "type": "animal"},
        {"id": "3", "answer": "yes"},
    ])  # fmt: skip
    preds = write(tmp_path / "preds.jsonl", [{"id": "1", "answer": "2"}, {"id": "2", "answer": "a dog."}, {"id": 3, "answer": "no"}])
    out = tmp_path / "scores.json"
    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--output", str(out)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["count"] == ["count", "1", "0.00%"]  # the standard: one answer, compared as written ("2" is not "two")
    assert rows["animal"] == ["animal", "1", "90.00%"]  # 3 of 10 annotators: 0.3 * 2/3 + 0.7 * 1
    result = json.loads(out.read_text())
    assert result["score"] == pytest.approx(0.9 / 3) and result["count"] == 3

    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--metric", "vqa_normalized"]) == 0
    assert ["count", "1", "100.00%"] in [line.split() for line in capsys.readouterr().out.splitlines()]
    assert main(["eval", "--predictions", str(preds), "--references", str(refs), "--metric", "exact"]) == 0
    assert ["animal", "1", "100.00%"] in [line.split() for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    "refs, preds, expected",
    [
        ([{"id": "1", "answer": "x"}], [{"id": "2", "answer": "x"}], "no prediction for question id '1'"),
        ([{"id": "1"}], [{"id": "1", "answer": "x"}], "refs.jsonl:1: missing 'answer'"),
        ([{"id": "1", "answer": "x"}], [{"id": "1", "answer": 3}], "preds.jsonl:1: missing 'answer' (a string)"),
        ([{"id": "1", "answer": "x"}], "{not json", "preds.jsonl:1: malformed JSON"),
        ([], [], "no reference records"),
    ],
)
def test_eval_bad_input_is_one_line(tmp_path, capsys, refs, preds, expected):
    refs_path = write(tmp_path / "refs.jsonl", refs)
    preds_path = tmp_path / "preds.jsonl"
    preds_path.write_text(preds if isinstance(preds, str) else "".join(json.dumps(r) + "\n" for r in preds))
    assert main(["eval", "--predictions", str(preds_path), "--references", str(refs_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_eval_missing_file(tmp_path, capsys):
    assert main(["eval", "--predictions", str(tmp_path / "p.jsonl"), "--references", str(tmp_path / "r.jsonl")]) == 2
    assert "r.jsonl: no such file" in capsys.readouterr().err


def test_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    # a bug may raise the same types as bad input; OWL2_DEBUG=1 lets them through instead of one line
    monkeypatch.setenv("OWL2_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="r.jsonl"):
        main(["eval", "--predictions", str(tmp_path / "p.jsonl"), "--references", str(tmp_path / "r.jsonl")])
