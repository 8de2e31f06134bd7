"""Preemption in one process: SIGTERM, SIGUSR1 or a first Ctrl-C (sent to the process during a step)
finish the step, write its checkpoint and `requeue.json` and raise `Preempted`; the re-run ends bit-identical to an
uninterrupted run; a second Ctrl-C stops at once; a signal in the last step lets the run finish."""

from __future__ import annotations

import json
import os
import signal

import pytest

from owl2 import Owl2Model
from owl2.train import Preempted, run
from owl2.train import checkpoint as ckpt
from owl2.train import manifest
from owl2.train.metrics import read_metrics
from owl2.train.preemption import REQUEUE_FILE
from tests.train.conftest import STEPS3, assert_same_weights, tiny_config


def signal_during_forward(monkeypatch, *signals_at: tuple[int, signal.Signals]) -> None:
    """Make the model's forward number `n` (one per step here) send `sig` to this process, for each `(n, sig)`."""
    forward, calls = Owl2Model.forward, []

    def forward_then_signal(self, *args, **kwargs):
        calls.append(1)
        for n, sig in signals_at:
            if len(calls) == n:
                os.kill(os.getpid(), sig)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Owl2Model, "forward", forward_then_signal)


def test_sigterm_checkpoints_the_step_and_the_rerun_matches_an_uninterrupted_run(tmp_path, monkeypatch, uninterrupted):
    signal_during_forward(monkeypatch, (2, signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=r"stopped after step 2 of 3 on SIGTERM; checkpoint-2 is written") as caught:
        run(tiny_config(1, tmp_path, *STEPS3))
    assert caught.value.step == 2
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-2"]
    assert manifest.verify(tmp_path / "checkpoint-2") == []
    assert not (tmp_path / "final").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back
    marker = json.loads((tmp_path / REQUEUE_FILE).read_text())  # written before any rank could exit
    assert marker == {"step": 2, "checkpoint": "checkpoint-2", "reason": str(caught.value)}

    monkeypatch.undo()
    assert_same_weights(run(tiny_config(1, tmp_path, *STEPS3)), uninterrupted)
    assert not (tmp_path / REQUEUE_FILE).exists()  # removed when the re-run started
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)
def test_sigusr1_and_a_first_ctrl_c_do_the_same(tmp_path, monkeypatch, sig):
    signal_during_forward(monkeypatch, (1, sig))
    before = signal.getsignal(sig)  # Python's default_int_handler, or SIG_IGN in a background job
    with pytest.raises(Preempted, match=rf"stopped after step 1 of 3 on {sig.name}"):
        run(tiny_config(1, tmp_path, *STEPS3))
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-1"]
    assert signal.getsignal(sig) == before  # the handler is put back


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    signal_during_forward(monkeypatch, (2, signal.SIGINT), (2, signal.SIGINT))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(1, tmp_path, *STEPS3, "save_steps=1"))
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-1"]  # step 2 was never finished
    assert signal.getsignal(signal.SIGINT) == before


def test_a_signal_in_the_last_step_lets_the_run_finish(tmp_path, monkeypatch):
    signal_during_forward(monkeypatch, (2, signal.SIGTERM))
    assert run(tiny_config(1, tmp_path, "max_steps=2")).is_dir()
