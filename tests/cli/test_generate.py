"""`owl2 generate`: batched answers equal one-by-one answers, resume skips answered ids, bad input."""

from __future__ import annotations

import json

import pytest

from owl2.cli.main import main


def read_answers(path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def generate(model_dir, questions, output, *extra) -> int:
    args = ["generate", "--model", str(model_dir), "--input", str(questions), "--output", str(output), "--quiet"]
    return main(args + ["--max-new-tokens", "5", *extra])


def test_batched_equals_one_by_one_and_carries_fields(model_dir, tiny_data, tmp_path):
    one, batched = tmp_path / "one.jsonl", tmp_path / "batched.jsonl"
    assert generate(model_dir, tiny_data["questions"], one, "--batch-size", "1") == 0
    assert generate(model_dir, tiny_data["questions"], batched, "--batch-size", "3") == 0
    a, b = read_answers(one), read_answers(batched)
    assert list(a) == list(b) and len(a) == 6
    assert {k: v["answer"] for k, v in a.items()} == {k: v["answer"] for k, v in b.items()}
    assert any(v["answer"] for v in a.values())  # a random model still says something
    assert a["heldout-0"]["question_type"] == "color" and a["heldout-0"]["image"] == "images/heldout_000000.png"
    assert "<|image|>" not in a["heldout-0"]["question"]
    assert "image" not in a["text-0"]


def test_compiled_decoding_gives_the_same_answers(model_dir, tiny_data, tmp_path):
    eager, compiled = tmp_path / "eager.jsonl", tmp_path / "compiled.jsonl"
    assert generate(model_dir, tiny_data["questions"], eager, "--batch-size", "3") == 0
    assert generate(model_dir, tiny_data["questions"], compiled, "--batch-size", "3", "--compile") == 0
    a, b = read_answers(eager), read_answers(compiled)
    assert len(a) == 6 and {k: v["answer"] for k, v in a.items()} == {k: v["answer"] for k, v in b.items()}


def test_resume_skips_answered_ids_and_repairs_a_torn_line(model_dir, tiny_data, tmp_path):
    full = tmp_path / "full.jsonl"
    assert generate(model_dir, tiny_data["questions"], full, "--batch-size", "4") == 0
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:3]) + lines[3][:10])  # killed while writing the 4th record
    assert generate(model_dir, tiny_data["questions"], partial, "--batch-size", "4") == 0
    resumed = partial.read_text().splitlines(keepends=True)
    assert resumed[:3] == lines[:3]  # kept, not regenerated
    assert len(resumed) == len(lines)
    assert read_answers(partial) == read_answers(full)
    assert generate(model_dir, tiny_data["questions"], partial) == 0  # nothing left: no model load, no change
    assert partial.read_text().splitlines(keepends=True) == resumed


def test_image_folder_and_escape(model_dir, tiny_data, tmp_path, capsys):
    moved = tmp_path / "q.jsonl"
    moved.write_text(tiny_data["questions"].read_text().replace('"images/', '"'))
    out = tmp_path / "a.jsonl"
    folder = tiny_data["images"]
    assert generate(model_dir, moved, out, "--image-folder", str(folder)) == 0
    assert len(read_answers(out)) == 6

    escape = tmp_path / "escape.jsonl"
    escape.write_text(json.dumps({"id": "x", "image": "../secret.png", "question": "what ?"}) + "\n")
    assert generate(model_dir, escape, tmp_path / "b.jsonl") == 2
    err = capsys.readouterr().err
    assert "escape.jsonl:1" in err and "'..'" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        ("not json\n", "escape.jsonl:1: malformed JSON"),
        ('{"id": "a", "question": "q ?"}\n["x"]\n', "escape.jsonl:2: expected a JSON object"),
        ('{"question": "q ?"}\n', "missing 'id'"),
        ('{"id": "a"}\n', "missing 'question'"),
        ('{"id": "a", "question": "q ?", "image": "nope.png"}\n', "image 'nope.png' not found"),
        ('{"id": "a", "question": "q"}\n{"id": "a", "question": "q"}\n', "appears twice"),
    ],
)
def test_bad_questions_file_is_one_line(model_dir, tmp_path, capsys, content, expected):
    questions = tmp_path / "escape.jsonl"
    questions.write_text(content)
    assert generate(model_dir, questions, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreadable_image_and_missing_model(model_dir, tiny_data, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": "what color ?", "image": "broken.png"}) + "\n")
    assert generate(model_dir, questions, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "q.jsonl:1" in err and "broken.png" in err and len(err.strip().splitlines()) == 1

    assert generate(tmp_path / "no-model", tiny_data["questions"], tmp_path / "out2.jsonl") == 2
    assert "no such model folder" in capsys.readouterr().err
    assert generate(tiny_data["images"], tiny_data["questions"], tmp_path / "out3.jsonl") == 2
    assert "no config.json" in capsys.readouterr().err
