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

Under the `deepspeed` launcher, signal the training processes (the launcher exits 75 when the first of
them does). The launcher itself dies on SIGUSR1, and on SIGTERM or SIGINT it passes SIGTERM to its
processes one after the other, waiting up to 30 s for each before SIGKILL, and then exits 1 whatever
they returned: the flag's all-reduce makes all ranks stop together at the first one's signal, but the
checkpoint has to be written within those 30 s.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
"""Signals that make training stop after the current optimizer step, with a checkpoint."""
REQUEUE_EXIT = 75
"""Exit status of a run stopped by a signal after checkpointing: re-run the same command to resume."""


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
