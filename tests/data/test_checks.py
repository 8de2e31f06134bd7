"""Every kind of bad input gives one clear problem per record, and `owl2 data check` reports them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from owl2.cli.main import main
from owl2.data.checks import iter_problems
from owl2.data.records import DataFileError, RecordFile

from .conftest import chat, png_header_only, save_image, write_jsonl


@pytest.fixture(autouse=True)
def only_the_data_command(monkeypatch):
    """In-process tests register `owl2 data` alone, so they do not import the model-side commands."""
    monkeypatch.setattr("owl2.cli.main.SUBCOMMANDS", ["owl2.cli.data"])


@pytest.fixture()
def bad_data(tmp_path):
    """A JSONL file with good records and one record per kind of problem; returns (path, folder, expected)."""
    images = tmp_path / "images"
    images.mkdir()
    save_image(images / "good.png")
    save_image(images / "second.png", 20, 50, seed=1)
    (images / "empty.png").write_bytes(b"")
    (images / "corrupt.png").write_bytes(b"this is not an image")
    full = save_image(tmp_path / "noise.png", 64, 64).read_bytes()
    (images / "truncated.png").write_bytes(full[: len(full) // 2])
    png_header_only(images / "bomb.png", 100_000, 100_000)
    save_image(tmp_path / "outside.png")
    (images / "link.png").symlink_to(tmp_path / "outside.png")
    q = "<|image|>\nwhat color ?"
    rows = [
        ({"id": "ok", "image": "good.png", "conversations": chat(q)}, None),
        ({"id": "missing", "image": "nope.png", "conversations": chat(q)}, "image 'nope.png' not found"),
        ({"image": "empty.png", "conversations": chat(q)}, "image 'empty.png' is an empty file"),
        ({"image": "corrupt.png", "conversations": chat(q)}, "image 'corrupt.png' is not a readable image"),
        ({"image": "truncated.png", "conversations": chat(q)}, "image 'truncated.png' is corrupt or truncated"),
        ({"image": "bomb.png", "conversations": chat(q)}, "image 'bomb.png' is too large to decode safely"),
        ({"image": "../outside.png", "conversations": chat(q)}, "image '../outside.png' contains '..'"),
        ({"image": str(tmp_path / "outside.png"), "conversations": chat(q)}, "is an absolute path"),
        ({"image": "link.png", "conversations": chat(q)}, "outside the image folder"),
        ({"image": "good.png", "conversations": chat("no placeholder")}, "0 <|image|> placeholders but 1 images"),
        ({"image": ["good.png", "second.png"], "conversations": chat(q)}, "1 <|image|> placeholders but 2 images"),
        ({"conversations": chat(q)}, "1 <|image|> placeholders but 0 images"),
        ('{"id": "broken", "conversations": [', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({"id": "empty", "conversations": []}, "'conversations' must be a non-empty list"),
        ({"conversations": [{"value": "hi"}, {"from": "gpt", "value": "x"}]}, "conversations[0]: 'from' must be one of"),
        ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "conversations[0]: 'value' must be a non-empty string"),
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}, "must alternate"),
        ({"conversations": [{"from": "human", "value": "a"}]}, "no gpt turn to learn from"),
        ({"id": "neither"}, "expected 'conversations' or 'caption'"),
        ({"image": 7, "caption": "x"}, "'image' must be a path or a list of paths"),
        ({"id": "text", "conversations": chat("what is one plus one ?", "two")}, None),
        ({"id": "cap", "image": ["good.png", "second.png"], "caption": "two shapes"}, None),
    ]
    path = write_jsonl(tmp_path / "data.jsonl", [r for r, _ in rows])
    expected = [(f"line {n}", reason) for n, (_, reason) in enumerate(rows, start=1) if reason]
    return path, images, expected


def test_one_problem_per_bad_record(bad_data):
    path, images, expected = bad_data
    problems = list(iter_problems(RecordFile(path), images))
    assert [p.location for p in problems] == [loc for loc, _ in expected]
    for problem, (_, reason) in zip(problems, expected):
        assert reason in problem.reason, (str(problem), reason)


def test_cli_prints_problems_and_summary(bad_data, capsys):
    path, images, expected = bad_data
    assert main(["data", "check", str(path), "--image-folder", str(images)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected) + 1
    assert all(line.startswith(f"{loc}: ") and reason in line for line, (loc, reason) in zip(lines, expected))
    assert lines[-1] == f"{path}: 23 records, 3 good, 20 bad"


def test_cli_good_file_exits_zero(synthetic, capsys):
    assert main(["data", "check", str(synthetic["heldout"]), "--image-folder", str(synthetic["images"])]) == 0
    assert capsys.readouterr().out == f"{synthetic['heldout']}: 25 records, 25 good, 0 bad\n"


def test_json_array_records_are_located_by_index(tmp_path, capsys):
    save_image(tmp_path / "a.png")
    records = [{"image": "a.png", "conversations": chat("<|image|> q")}, {"conversations": []}]
    (tmp_path / "data.json").write_text(json.dumps(records))
    assert main(["data", "check", str(tmp_path / "data.json")]) == 1  # image folder defaults to the file's
    out = capsys.readouterr().out.splitlines()
    assert out == ["record 1: 'conversations' must be a non-empty list", f"{tmp_path / 'data.json'}: 2 records, 1 good, 1 bad"]


def test_malformed_json_array(tmp_path, capsys):
    (tmp_path / "data.json").write_text('[{"id": 1},\n  {"id": ')
    with pytest.raises(DataFileError, match="line 2: malformed JSON"):
        RecordFile(tmp_path / "data.json")
    assert main(["data", "check", str(tmp_path / "data.json")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("line 2: malformed JSON") and out[1].endswith("unreadable, 0 good records")


def test_usage_errors_are_one_line_on_stderr(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err == f"owl2 data: error: {tmp_path / 'missing.jsonl'}: no such data file\n"
    (tmp_path / "data.csv").write_text("a,b\n")
    assert main(["data", "check", str(tmp_path / "data.csv")]) == 2
    assert "expected a .json or .jsonl file" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter imports torch and transformers
def test_console_script_exit_code_without_traceback(bad_data):
    path, images, expected = bad_data
    code = "import sys; from owl2.cli.main import main; sys.exit(main())"
    run = subprocess.run(
        [sys.executable, "-c", code, "data", "check", str(path), "--image-folder", str(images)],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert run.stdout.splitlines()[0] == "line 2: image 'nope.png' not found"
