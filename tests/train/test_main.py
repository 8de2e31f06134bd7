"""The training command's exit statuses: each failure is one line on stderr with its documented status
(no traceback unless OWL2_DEBUG is set)."""

from __future__ import annotations

import pytest

from owl2.train import NonFiniteLossError, OutputWriteError, Preempted
from owl2.train import loop
from owl2.train.main import main
from tests.train.conftest import SMOKE


def fails_with(monkeypatch, error: BaseException) -> None:
    def run(config):
        raise error

    monkeypatch.setattr(loop, "run", run)


@pytest.mark.parametrize("error, status", [
    (OutputWriteError("runs/x: could not write checkpoint-40: No space left on device; ..."), 74),
    (Preempted("stopped after step 3 of 6 on SIGTERM; checkpoint-3 is written: re-run ...", 3), 75),
    (NonFiniteLossError("non-finite loss at step 3 on 1 of 1 ranks; ..."), 1),
    (KeyboardInterrupt(), 130),
], ids=["write-error", "preempted", "nan", "second-ctrl-c"])  # fmt: skip
def test_each_failure_is_one_line_with_its_status(monkeypatch, capsys, tmp_path, error, status):
    fails_with(monkeypatch, error)
    assert main(["--config", str(SMOKE[1]), "--set", f"output_dir={tmp_path}"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(error) in err, err


def test_a_bad_config_is_status_2(capsys, tmp_path):
    assert main(["--config", str(SMOKE[1]), "--set", f"output_dir={tmp_path}", "--set", "max_step=3"]) == 2
    assert "max_step: unknown key" in capsys.readouterr().err


def test_owl2_debug_keeps_the_traceback(monkeypatch, tmp_path):
    fails_with(monkeypatch, OutputWriteError("runs/x: could not write final/"))
    monkeypatch.setenv("OWL2_DEBUG", "1")
    with pytest.raises(OutputWriteError):
        main(["--config", str(SMOKE[1]), "--set", f"output_dir={tmp_path}"])
