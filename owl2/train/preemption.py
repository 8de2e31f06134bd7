"""Stopping cleanly when the cluster asks (no official counterpart: the official `Trainer` dies on
SIGTERM and loses everything since its last checkpoint).

While `run` trains, SIGTERM (a scheduler's preemption, `scancel`), SIGUSR1 (SLURM's
`--signal=USR1@<seconds>` warning) and a first SIGINT (Ctrl-C) only raise a flag. The flag rides in the
all-reduce of each micro-batch's statistics that the loop does anyway (a fourth number: +0.13 ms on the
smoke config's 260 ms step with 2 CPU processes on gloo, where a separate all-reduce of the flag cost
0.4-0.5 ms), so every rank sees the same sum and all stop after the same optimizer step, even when only
one of them got the signal. They then write `checkpoint-<step>/` and raise `Preempted`; the training
command (`owl2.train.main`) exits with `REQUEUE_EXIT`: 75, `EX_TEMPFAIL` of sysexits.h ("try again
later"), distinct from 143 (killed by SIGTERM, nothing saved) so that a job script can requeue on exactly
this status. Running the same command again resumes bit-identically. A second Ctrl-C raises
`KeyboardInterrupt` at once (the temporary checkpoint folder it may leave is removed by the next run).

Whichever way the signal came, rank 0 also writes `output_dir/requeue.json` (`REQUEUE_FILE`: the step,
the checkpoint and why) once the checkpoint is complete and before any rank exits, and removes it when a
run starts. A job script should requeue on that file, not only on the status: launchers report their
own. The `deepspeed` launcher exits 75 when the first of its processes does; but when it is signalled
itself (Kubernetes stops a pod by SIGTERM to its first process; Ctrl-C signals the terminal's process
group), its runner dies at once, and `launch.py` passes SIGTERM on, kills the ranks 30 s later and exits
1. `owl2 train --nproc N` (`owl2.train.launch`) runs the launcher out of reach of those signals and
passes them to the ranks alone.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
"""Signals that make training stop after the current optimizer step, with a checkpoint."""
REQUEUE_EXIT = 75
"""Exit status of a run stopped by a signal after checkpointing: re-run the same command to resume."""
REQUEUE_FILE = "requeue.json"
"""Written into `output_dir` by rank 0 when a run stopped on a signal after its checkpoint; removed at start."""


def write_requeue_marker(output_dir: str | Path, step: int, reason: str) -> Path:
    """Write `output_dir/requeue.json` atomically: `{"step", "checkpoint", "reason"}`; returns the file."""
    path = Path(output_dir) / REQUEUE_FILE
    partial = path.with_name(f".{REQUEUE_FILE}.tmp")
    partial.write_text(json.dumps({"step": step, "checkpoint": f"checkpoint-{step}", "reason": reason}) + "\n")
    os.replace(partial, path)
    return path


def clear_requeue_marker(output_dir: str | Path) -> None:
    """Remove `output_dir/requeue.json`, if any: a run that starts is no longer waiting to be requeued."""
    try:
        Path(output_dir, REQUEUE_FILE).unlink(missing_ok=True)
    except OSError:  # an unreadable output_dir: the run's own check reports it next, in one line
        pass


class Preempted(KeyboardInterrupt):
    """Training stopped on a signal after writing the checkpoint of `step`; re-running resumes from it.

    A `KeyboardInterrupt`: no `except Exception` swallows it, and whatever handles Ctrl-C (the `owl2`
    command, e.g. for `owl2 demo`) handles it too.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class StopSignals:
    """Context manager that turns `STOP_SIGNALS` into a request to stop after the current step.

    Installs its handlers only in the main thread (Python allows no other), restoring the previous
    ones on exit; elsewhere it never requests a stop.
    """

    def __init__(self):
        self.received: int | None = None
        """The first stop signal received on this rank, or None."""
        self._interrupts = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether this rank has received a stop signal."""
        return self.received is not None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # only set flags here: the loop reports the stop, as printing from a handler can re-enter a stream
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt
        if self.received is None:
            self.received = signum


def signal_name(signum: int | None) -> str:
    """`SIGTERM`-style name of a signal number ("a signal" for None)."""
    return signal.Signals(signum).name if signum is not None else "a signal"
