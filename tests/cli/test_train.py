"""`owl2 train`: one process runs the training command in place; N processes go through
`owl2.train.launch`, whose signal path is tested with the real launcher in tests/train/test_launcher.py.
Here: its command, its exit statuses and its input errors, none of which start a process."""

from __future__ import annotations

import sys
import time

import pytest

from owl2.cli.main import main
from owl2.train import launch
from owl2.train.preemption import REQUEUE_EXIT, REQUEUE_FILE, write_requeue_marker
from tests.train.conftest import SMOKE


def test_one_process_is_the_training_command(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("owl2.train.main.main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(launch, "launch", lambda *a, **k: pytest.fail("one process needs no launcher"))
    assert main(["train", "--config", "c.yaml", "--set", "max_steps=3", "--set", "seed=1"]) == 0
    assert seen == [["--config", "c.yaml", "--set", "max_steps=3", "--set", "seed=1"]]


def test_several_processes_go_through_the_launcher_with_the_run_s_output_dir(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(launch, "launch", lambda *args: calls.append(args) or 0)
    assert main(["train", "--nproc", "4", "--config", str(SMOKE[1]), "--set", f"output_dir={tmp_path}"]) == 0
    assert calls == [(4, ["--config", str(SMOKE[1]), "--set", f"output_dir={tmp_path}"], str(tmp_path), None)]


def test_a_bad_config_is_reported_once_before_any_process_starts(monkeypatch, capsys):
    monkeypatch.setattr(launch, "launch", lambda *a, **k: pytest.fail("launched with a bad config"))
    assert main(["train", "--nproc", "2", "--config", str(SMOKE[1]), "--set", "max_step=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_step: unknown key" in err


def test_nproc_below_one_is_a_usage_error(capsys):
    assert main(["train", "--nproc", "0", "--config", "c.yaml"]) == 2
    assert "--nproc must be at least 1, got 0" in capsys.readouterr().err


def test_the_launcher_command_runs_owl2_train_under_deepspeed_on_a_free_port():
    command = launch.launcher_command(2, ["--config", "c.yaml"])
    assert command[:3] == [sys.executable, "-m", "deepspeed.launcher.runner"]
    assert command[3:5] == ["--num_gpus", "2"] and int(command[6]) > 0
    assert command[7:] == ["--module", "owl2.train", "--config", "c.yaml"]
    assert launch.launcher_command(1, [], master_port=29500)[6] == "29500"


def test_exit_status_is_requeue_when_this_run_wrote_the_marker(tmp_path):
    started = time.time()
    assert launch.exit_status(0, tmp_path, started) == 0
    assert launch.exit_status(-15, tmp_path, started) == 143  # as a shell reports a death by SIGTERM
    assert launch.exit_status(3, None, started) == 3
    write_requeue_marker(tmp_path, 4, "stopped after step 4 of 6 on SIGTERM")
    assert launch.exit_status(1, tmp_path, started) == REQUEUE_EXIT  # launch.py's own status is overruled
    assert launch.exit_status(1, tmp_path, started + 3600) == 1  # a marker older than this run is not its own
    assert (tmp_path / REQUEUE_FILE).exists()
