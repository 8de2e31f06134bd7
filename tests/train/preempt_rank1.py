"""The training command preempted on one rank, then re-run, in the same two launcher processes (one
launch instead of two: each costs tens of seconds of start-up on CPU).

Rank 1 sends itself SIGTERM during its 2nd optimizer step, so both ranks must stop after step 3 with a
checkpoint. The command is then run again, which resumes from that checkpoint's files as a requeued job
would. Exits with the first run's status, so the test sees what the launcher makes of it; prints both.
Launched by tests/train/test_launcher.py in place of tools/train.py.
"""

from __future__ import annotations

import os
import signal
import sys

from deepspeed import DeepSpeedEngine

from owl2.train.main import main

if os.environ.get("RANK") == "1":
    step, calls = DeepSpeedEngine.step, []

    def step_then_sigterm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args, **kwargs)

    DeepSpeedEngine.step = step_then_sigterm

first = main()
second = main()  # what the requeued job does: resume from the checkpoint's files
print(f"exit statuses: {first}, then {second}", flush=True)
sys.exit(first if second == 0 else second)
