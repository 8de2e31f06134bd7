"""`owl2 checkpoint verify`: a good run folder passes, each damaged checkpoint is one line per problem and
exit 1, bad folders are usage errors, and torch is never imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from owl2.cli.main import main
from owl2.train import manifest
from tests.test_imports import HEAVY, _modules_after


def fake_checkpoint(folder: Path, payload: bytes) -> Path:
    """A checkpoint-shaped folder with a manifest (the verification reads nothing else)."""
    (folder / "engine").mkdir(parents=True)
    (folder / "engine" / "model.pt").write_bytes(payload)
    (folder / "trainer_state.json").write_text('{"step": 1}\n')
    names = manifest.list_files(folder)
    manifest.write_manifest(folder, manifest.digest_files(folder, names))
    return folder


@pytest.fixture
def run_dir(tmp_path) -> Path:
    for step in (10, 20):
        fake_checkpoint(tmp_path / "run" / f"checkpoint-{step}", bytes(range(256)) * step)
    return tmp_path / "run"


def test_a_good_run_and_a_good_checkpoint(run_dir, capsys):
    assert main(["checkpoint", "verify", str(run_dir)]) == 0
    assert capsys.readouterr().out == f"{run_dir}: 2 checkpoints, 2 good, 0 damaged\n"
    assert main(["checkpoint", "verify", str(run_dir / "checkpoint-20")]) == 0
    assert capsys.readouterr().out == f"{run_dir / 'checkpoint-20'}: good (5.0 KiB)\n"


def test_one_line_per_problem_and_exit_1(run_dir, capsys):
    (run_dir / "checkpoint-20" / "engine" / "model.pt").write_bytes(b"short")
    (run_dir / "checkpoint-10" / "trainer_state.json").unlink()
    assert main(["checkpoint", "verify", str(run_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    model = run_dir / "checkpoint-20" / "engine" / "model.pt"
    assert lines == [
        f"{run_dir / 'checkpoint-10' / 'trainer_state.json'}: missing; the manifest lists 12 bytes",
        f"{model}: 5 bytes; the manifest says 5120 (truncated or overwritten)",
        f"{run_dir}: 2 checkpoints, 0 good, 2 damaged",
    ]


def test_folders_that_are_not_checkpoints_are_usage_errors(tmp_path, capsys):
    assert main(["checkpoint", "verify", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    assert main(["checkpoint", "verify", str(tmp_path)]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err


def test_verify_imports_no_torch(run_dir):
    code = f"from owl2.cli.main import main\nassert main(['checkpoint', 'verify', {str(run_dir)!r}]) == 0"
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), f"imported: {sorted(loaded & set(HEAVY))}"
