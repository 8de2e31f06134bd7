"""`owl2 demo --quick`: the whole pipeline (data, both stages with the real trainer, answers, report)
in about a minute, learning something measurable. The full demo's accuracy target is measured, not tested."""

from __future__ import annotations

import json

import pytest

from owl2.cli.main import main


@pytest.mark.slow
def test_quick_demo_trains_answers_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--seed", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == {"stage1": 5, "stage2": 40}
    assert report["loss"]["stage2_last"] < 0.6 * report["loss"]["stage2_first"]  # it learns
    assert set(report["per_type"]) == {"color", "shape", "count", "position", "yesno"}
    assert 0.0 <= report["accuracy"] <= 1.0 and report["count"] == 25 and report["text_only_count"] == 10
    for name in ("loss_curve.png", "answers.png", "answers.jsonl", "stage2/final/config.json"):
        assert (out / name).is_file(), name
    assert (out / "answers.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "image (held-out)" in table and "text-only" in table

    assert main(["demo", "--quick", "--out", str(out)]) == 2  # never resumes someone else's run
    assert "already holds a training run" in capsys.readouterr().err
