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


@pytest.mark.slow
def test_quick_onellm_demo_runs_every_stage_and_reports_each(tmp_path, capsys):
    out = tmp_path / "onellm"
    assert main(["demo", "--recipe", "onellm", "--quick", "--out", str(out), "--seed", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    modalities = ["image", "video", "audio", "point", "imu"]
    assert [s["name"] for s in report["stages"]] == ["stage1-image", "stage2-video-audio-point", "stage3-imu",
                                                     "stage4-instruct"]  # fmt: skip
    assert [s["modalities"] for s in report["stages"]] == [modalities[:1], modalities[:4], modalities, modalities]
    for stage in report["stages"]:
        assert list(stage["accuracy_by_modality"]) == stage["modalities"]
        assert all(0.0 <= v <= 1.0 for v in stage["accuracy_by_modality"].values())
        assert stage["loss_last"] < stage["loss_first"], stage["name"]  # every stage learns
    assert list(report["accuracy_by_modality"]) == modalities and 0.0 <= report["text_only_accuracy"] <= 1.0
    assert set(report["forgetting"]) == set(modalities) and report["sampler"] == "uniform"
    assert report["wall_time_s"] > 0
    for name in ["loss_curve.png", *(f"sheet_{m}.png" for m in modalities), "stage4-instruct/final/media_config.json"]:
        assert (out / name).is_file(), name
    table = capsys.readouterr().out
    assert "stage3-imu" in table and "caption CIDEr" in table


def test_onellm_recipe_refuses_the_owl2_step_options(tmp_path, capsys):
    assert main(["demo", "--recipe", "onellm", "--stage1-steps", "3", "--out", str(tmp_path)]) == 2
    assert "settings of --recipe owl2" in capsys.readouterr().err
    assert main(["demo", "--sampler", "sequential", "--out", str(tmp_path)]) == 2
    assert "--sampler is a setting of --recipe onellm" in capsys.readouterr().err


def test_the_onellm_toy_init_is_the_trainers_draw_with_a_sin_cos_position_table(tmp_path):
    import torch

    from owl2.config import OneLLMConfig
    from owl2.demo.onellm import MODEL_CONFIG, POSITION_SCALE, write_toy_init
    from owl2.models import OneLLMModel
    from owl2.models.abstractor import sincos_2d

    init = OneLLMModel.from_pretrained(write_toy_init(MODEL_CONFIG, tmp_path / "init", seed=3)).state_dict()
    torch.manual_seed(3)  # what `owl2.train.build_model` draws for a fresh model of seed 3
    fresh = OneLLMModel(OneLLMConfig.from_json_file(MODEL_CONFIG)).state_dict()
    assert set(init) == set(fresh)
    table = init.pop("encoder.clip.pos_embed")[0]  # (1 + 4 * 4, 32)
    torch.testing.assert_close(table, POSITION_SCALE * sincos_2d(32, 4), rtol=0, atol=0)
    assert table[1:].norm(dim=-1).mean() > 10 * fresh.pop("encoder.clip.pos_embed")[0, 1:].norm(dim=-1).mean()
    for name, tensor in init.items():
        torch.testing.assert_close(tensor, fresh[name], rtol=0, atol=0, msg=name)
