"""One node's training processes under the `deepspeed` launcher, stopped cleanly when the node is told to
stop (`owl2 train --nproc N`; no official counterpart, whose scripts call `deepspeed` directly).

Signalled itself, the `deepspeed` launcher stops badly. Its runner (`deepspeed`) handles no signal on one
node and dies at once, so a job script sees a status while the ranks are still writing their checkpoint.
`launch.py` under it passes SIGTERM on to the ranks but kills them 30 s later and exits 1 whatever they
returned. Kubernetes (a pod's SIGTERM, `tini -g`) and a shell's Ctrl-C signal that whole process group.

`launch` runs the launcher in a session of its own, out of reach of signals to ours. It passes each of
`STOP_SIGNALS` it receives to the training ranks alone (the processes `launch.py` started), never to
the launcher or the ranks' data-loader workers. Each rank then finishes its optimizer step, writes the
checkpoint and exits with `REQUEUE_EXIT` (`owl2.train.preemption`); a second Ctrl-C stops them at once.
`launch` waits for all of them, for as long as it takes (the scheduler's own grace period is the limit),
and exits with `REQUEUE_EXIT` whenever this run wrote `output_dir/requeue.json`, whatever the launcher
reported. If it is killed with SIGKILL the launcher's session outlives it: schedulers kill the job's
whole cgroup, which covers it.

Several nodes are started by the cluster's own launcher, one training process per task (`srun`,
`torchrun`: README, "On a fault"). There the signal goes to each task and the ranks handle it themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from owl2.train.preemption import REQUEUE_EXIT, REQUEUE_FILE, STOP_SIGNALS

LAUNCHER_MODULE = "deepspeed.launcher.launch"
"""The module of the per-node process that starts the ranks: its children are the ranks."""


def free_port() -> int:
    """A TCP port free on this machine now (for a rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(nproc: int, train_args: list[str], master_port: int | None = None) -> list[str]:
    """`deepspeed --num_gpus nproc --master_port P --module owl2.train TRAIN_ARGS` with this interpreter.

    `nproc` processes on this node (GPUs, or CPU processes under DeepSpeed's CPU accelerator); a free
    port is picked when `master_port` is None.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    if master_port is None:
        master_port = free_port()
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
            "--master_port", str(master_port), "--module", "owl2.train", *train_args]


def training_ranks(launcher_pid: int) -> list:
    """The training processes under the launcher `launcher_pid` (`psutil.Process`es; empty before they start)."""
    import psutil  # a dependency of deepspeed, as is this module's launcher

    try:
        descendants = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    ranks = []
    for process in descendants:
        try:
            if LAUNCHER_MODULE in " ".join(process.cmdline()):
                ranks.extend(process.children())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ranks


def forward(signum: int, launcher_pid: int) -> str:
    """Send `signum` to the training ranks under `launcher_pid`; to the launcher's whole session before
    they exist (nothing to checkpoint yet). Returns what was signalled, for the log line."""
    import psutil

    ranks = training_ranks(launcher_pid)
    sent = []
    for rank in ranks:
        try:
            rank.send_signal(signum)
            sent.append(rank.pid)
        except psutil.NoSuchProcess:
            pass
    if sent:
        return f"ranks {', '.join(map(str, sent))}"
    try:
        os.killpg(launcher_pid, signum)
    except ProcessLookupError:
        pass
    return "the launcher (no rank had started)"


def exit_status(returncode: int, output_dir: Path | None, started: float) -> int:
    """The launcher's status as a shell reports it (128 + N for signal N), or `REQUEUE_EXIT` when this run
    (begun at `started`, a `time.time()`) wrote `output_dir/requeue.json`."""
    marker = Path(output_dir, REQUEUE_FILE) if output_dir else None
    if marker is not None and marker.exists() and marker.stat().st_mtime >= started - 1:
        return REQUEUE_EXIT
    return 128 - returncode if returncode < 0 else returncode


def launch(nproc: int, train_args: list[str], output_dir: str | Path | None,
           master_port: int | None = None, env: dict[str, str] | None = None) -> int:
    """Run `python -m owl2.train TRAIN_ARGS` in `nproc` processes on this node; stop them cleanly on a signal.

    Args:
        nproc: Processes on this node.
        train_args: `owl2.train`'s arguments (`--config`, `--set`).
        output_dir: The run's `output_dir`, where the ranks write `requeue.json`.
        master_port: The rendezvous port (a free one when None).
        env: The processes' environment (this one when None).

    Returns:
        The exit status: `REQUEUE_EXIT` after a stop on a signal with its checkpoint written, otherwise the
        launcher's (0 when every rank finished).
    """
    command = launcher_command(nproc, train_args, master_port)
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    started = time.time()
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            while process.poll() is None:
                while received:
                    signum = received.pop(0)
                    whom = forward(signum, process.pid)
                    print(f"owl2 train: {signal.Signals(signum).name} passed to {whom}; waiting for their "
                          "checkpoint", file=sys.stderr, flush=True)
                time.sleep(0.1)
        finally:
            if process.poll() is None:  # an exception here (not a signal): leave no rank behind
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_status(process.returncode, Path(output_dir) if output_dir else None, started)
