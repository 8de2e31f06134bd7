"""A checkpoint written by 2 processes resumes on 1, and one written by 1 resumes on 2, under ZeRO-0, ZeRO-2
and ZeRO-3, with the real `deepspeed` launcher for the 2-process side.

Each case runs the same toy run (stage 1, 12 samples, a global batch of 4: 3 steps an epoch, 4 steps)
once without a break on N processes, with checkpoints after steps 2 and 4, and once resumed on M
processes from a copy of that run's folder as it was after step 2 (its checkpoint-2, logs and data),
across the end of the epoch: what a job requeued on another allocation sees. With micro-batches of 2,
2 processes take one each a step and 1 process accumulates two.

Checked: the resumed steps see exactly the uninterrupted run's samples (by sample id, step for step); the
reshard is exact (the weights, Adam moments and step the resumed engine holds equal, bit for bit, those
the checkpoint was saved from); the final weights and Adam moments equal the uninterrupted run's within
`ATOL` and `RTOL` (the gradient of each global batch is summed in another order); Adam's step went on.

All 2-process runs share one launch (`tests/train/resume_runs.py`): the runs themselves take seconds,
the launch's start-up half a minute, during which this process trains the 1-process runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from owl2.train import ConfigError, run
from owl2.train.config import load_train_config
from owl2.train.data import ResumableSampler
from owl2.train.metrics import SAMPLE_IDS_FILE, read_metrics
from tests.conftest import REPO
from tests.train.conftest import SMOKE, TINY, tiny_config
from tests.train.resume_runs import read_states, record_states

DEEPSPEED = Path(sys.executable).with_name("deepspeed")
STEPS, STOP = 4, 2
RUN = [*TINY, "micro_batch_size=2", "global_batch_size=4", f"max_steps={STEPS}", f"save_steps={STOP}",
       "save_total_limit=0", "log_sample_ids=true"]
"""The toy run: 12 image samples, 3 global batches of 4 an epoch, 4 steps; checkpoints after steps 2 and 4."""
STAGES = ["zero0", "zero2", "zero3"]
ATOL, RTOL = 1e-6, 1e-4
"""Final weights and Adam moments, resumed on another world size against the uninterrupted run. Only the
order of summation differs (float32 rounding, ~1e-7 relative a step); Adam divides by the square root of
the second moment, so where a gradient is near zero a rounding difference is magnified in the update, which
is at most about the learning rate (1e-3) in size. Measured on the toy run, largest differences over all six
cases: 1.8e-7 on the fp32 weights, 7.5e-9 on exp_avg, 1.6e-10 on exp_avg_sq."""

pytestmark = pytest.mark.skipif(shutil.which(str(DEEPSPEED)) is None, reason="deepspeed launcher not installed")


def overrides(stage: str, output_dir: Path) -> list[str]:
    return [*RUN, f"deepspeed=configs/deepspeed/{stage}.json", f"output_dir={output_dir}"]


def copy_at_step(source: Path, target: Path, step: int) -> Path:
    """A copy of the run folder `source` as it was after `step`: later checkpoints, `final/` and state
    records left out (its logs keep later lines; a resume drops them). Renamed into place when complete."""
    def later(folder: str, names: list[str]) -> set[str]:
        if Path(folder) != source:
            return set()
        return {n for n in names if n in ("final", "states", "loss_curve.png")
                or (n.startswith("checkpoint-") and int(n.split("-")[1]) > step)}

    tmp = Path(shutil.copytree(source, target.with_name(f"{target.name}.tmp"), ignore=later))
    return tmp.rename(target)


def start_launch(runs: list[dict], workdir: Path) -> subprocess.Popen:
    """Start `deepspeed --num_gpus 2 tests/train/resume_runs.py` (CPU accelerator) on `runs`; its output goes
    to `workdir/launch.{out,err}` (a pipe nobody reads while the test trains would fill up and stall it)."""
    spec = workdir / "runs.json"
    spec.write_text(json.dumps(runs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(DEEPSPEED), "--num_gpus", "2", "--master_port", str(port), "tests/train/resume_runs.py", str(spec)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["DS_ACCELERATOR"] = "cpu"
    with open(workdir / "launch.out", "w") as out, open(workdir / "launch.err", "w") as err:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, text=True, start_new_session=True)


def launch_output(workdir: Path) -> str:
    return (workdir / "launch.out").read_text()[-3000:] + (workdir / "launch.err").read_text()[-3000:]


def wait_for(path: Path, launch: subprocess.Popen, workdir: Path, timeout: float = 600) -> None:
    """Wait until the launch has written `path`; fail with its output if it ends first."""
    started = time.perf_counter()
    while not path.exists():
        assert launch.poll() is None, launch_output(workdir)
        assert time.perf_counter() - started < timeout, f"{path}: not written after {timeout} s"
        time.sleep(0.1)


@contextmanager
def warnings_of(logger: str) -> Iterator[list[str]]:
    """The messages `logger` warns with inside the block."""
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger(logger).addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger(logger).removeHandler(handler)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """For each stage: `{"1", "2", "1->2", "2->1"}` run folders (uninterrupted on 1 and 2 processes, resumed
    from their checkpoint-2 on the other world size), and the reshard log lines.

    The launch (2 processes) and this process (1) work side by side: while the launch starts up and trains
    its uninterrupted runs, this process trains its own; each resume starts once the folder it resumes from
    has been copied.
    """
    root = tmp_path_factory.mktemp("world-size")
    folders = {stage: {key: root / f"{key.replace('->', '-to-')}-{stage}" for key in ("1", "2", "1->2", "2->1")}
               for stage in STAGES}

    def argv(stage: str, key: str) -> list[str]:
        return ["--config", str(SMOKE[1]), *[a for o in overrides(stage, folders[stage][key]) for a in ("--set", o)]]

    started = time.perf_counter()
    launch = start_launch([{"argv": argv(stage, "2"), "after": None} for stage in STAGES]
                          + [{"argv": argv(stage, "1->2"), "after": str(folders[stage]["1->2"])} for stage in STAGES],
                          root)
    try:
        with pytest.MonkeyPatch.context() as patch, warnings_of("owl2.train.checkpoint") as lines:
            record_states(patch)
            for stage in STAGES:
                run(load_train_config(SMOKE[1], overrides(stage, folders[stage]["1"])))
                copy_at_step(folders[stage]["1"], folders[stage]["1->2"], STOP)
            for stage in STAGES:
                wait_for(folders[stage]["2"] / "final", launch, root)
                copy_at_step(folders[stage]["2"], folders[stage]["2->1"], STOP)
                run(load_train_config(SMOKE[1], overrides(stage, folders[stage]["2->1"])))
        assert launch.wait(timeout=600) == 0, launch_output(root)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)  # the launcher and the ranks it started
    print(f"all runs: {time.perf_counter() - started:.1f} s; in the launch:")
    print("\n".join(line for line in (root / "launch.out").read_text().splitlines() if line.startswith("run took")))
    logged = {"2->1": lines, "1->2": [line for line in (root / "launch.err").read_text().splitlines()
                                      if "resumed on" in line]}
    return {"folders": folders, "logged": logged}


CASES = [(stage, direction) for stage in STAGES for direction in ("2->1", "1->2")]
IDS = [f"{stage}-{d.replace('->', 'to')}" + ("-slowest" if stage == "zero3" else "") for stage, d in CASES]


def step_ids(output_dir: Path) -> dict[int, list[list[int]]]:
    """Each step's sample ids, per rank, from `sample_ids.jsonl`."""
    return {r["step"]: r["ranks"] for r in read_metrics(output_dir, SAMPLE_IDS_FILE)}


@pytest.mark.parametrize("stage, direction", CASES, ids=IDS)
def test_the_resumed_steps_see_exactly_the_uninterrupted_runs_samples(runs, stage, direction):
    folders = runs["folders"][stage]
    resumed, straight = step_ids(folders[direction]), step_ids(folders[direction[0]])
    assert sorted(resumed) == sorted(straight) == list(range(1, STEPS + 1))
    for step in range(STOP + 1, STEPS + 1):
        ours, theirs = sum(resumed[step], []), sum(straight[step], [])
        assert len(resumed[step]) == int(direction[-1]) and len(straight[step]) == int(direction[0])
        assert sorted(ours) == sorted(theirs), step  # the same global batch, split over other ranks
    epoch = sorted(i for step in range(1, 4) for i in sum(resumed[step], []))
    assert epoch == list(range(12))  # the first epoch: each sample once, across the resume
    assert json.loads((folders[direction] / f"checkpoint-{STEPS}" / "trainer_state.json").read_text()) == {
        "step": STEPS, "epoch": 1, "samples_in_epoch": 4, "global_batch_size": 4, "seed": 42,
        "written_by": {"world_size": int(direction[-1]), "zero_stage": int(stage[-1])}}


@pytest.mark.parametrize("stage, direction", CASES, ids=IDS)
def test_the_reshard_is_exact_and_the_end_matches_the_uninterrupted_run(runs, stage, direction):
    straight_dir, resumed_dir = runs["folders"][stage][direction[0]], runs["folders"][stage][direction]
    saved, loaded = read_states(straight_dir, f"saved-{STOP}"), read_states(resumed_dir, f"loaded-{STOP}")
    assert set(saved) == set(loaded)
    for key in saved:  # weights, master weights and Adam moments: copied, not recomputed
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0, msg=key)
    assert loaded["step"].tolist() == [STOP]

    straight, resumed = read_states(straight_dir, f"saved-{STEPS}"), read_states(resumed_dir, f"saved-{STEPS}")
    assert resumed["step"].tolist() == straight["step"].tolist() == [STEPS]  # Adam's step went on from STOP
    assert sum(float(v.abs().sum()) for k, v in resumed.items() if k.endswith(".exp_avg")) > 0
    worst = dict.fromkeys(["fp32", "exp_avg", "exp_avg_sq"], 0.0)
    for key in straight.keys() - {"step"}:
        torch.testing.assert_close(resumed[key], straight[key], rtol=RTOL, atol=ATOL, msg=key)
        kind = key.rsplit(".", 1)[1]
        worst[kind] = max(worst[kind], float((resumed[key] - straight[key]).abs().max()))
    print(f"{stage} {direction}: largest difference to the uninterrupted run: "
          + ", ".join(f"{kind} {value:.2e}" for kind, value in worst.items()))


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_one_line_says_the_world_size_changed(runs, direction):
    lines = runs["logged"][direction]
    assert len(lines) == len(STAGES), lines
    before, after = direction.split("->")
    for stage, line in zip(STAGES, lines):
        how = "its state is whole (one file), loaded as it is" if stage == "zero0" else "resharded through a universal"
        assert f"checkpoint-{STOP}: written by {before} rank" in line and f"resumed on {after} rank" in line
        assert how in line and f"ZeRO-{stage[-1]}" in line
        split = f"ranks x accumulation x micro-batch = {after} x {2 // int(after)} x 2"
        assert f"the global batch stays 4 samples ({split})" in line


def test_a_changed_global_batch_or_seed_is_refused_naming_both(runs):
    folder = runs["folders"]["zero2"]["2->1"]
    for key, value, theirs in [("global_batch_size", 8, 4), ("seed", 7, 42)]:
        with pytest.raises(ConfigError, match=rf"{key}: {value}, but .*checkpoint-{STEPS} was written with {theirs}"):
            run(load_train_config(SMOKE[1], [*overrides("zero2", folder), f"{key}={value}", f"max_steps={STEPS + 2}"]))


def test_each_global_batch_is_the_same_samples_on_any_world_size(tmp_path):
    lengths = [5, 9, 3, 7, 8, 2, 6, 4] * 3 + [-4, -6, -2, -5] * 2  # 24 image samples, 8 text-only
    config = tiny_config(2, tmp_path, "micro_batch_size=2", "global_batch_size=8")
    samplers = {world: [ResumableSampler(lengths, config, world, rank) for rank in range(world)] for world in (1, 2, 4)}
    batches = samplers[1][0].global_batches(epoch=1)
    assert len(batches) == samplers[1][0].batches_per_epoch() == 4
    assert sorted(i for batch in batches for i in batch) == list(range(32))
    for world, ranks in samplers.items():
        assert ranks[0].accumulation == 8 // (2 * world)
        assert all(r.global_batches(epoch=1) == batches for r in ranks)  # a function of (seed, epoch) alone
        per_rank = [r.micro_batches(epoch=1) for r in ranks]
        for step, batch in enumerate(batches):
            accumulated = [m[step * ranks[0].accumulation:(step + 1) * ranks[0].accumulation] for m in per_rank]
            assert sorted(i for rank in accumulated for micro in rank for i in micro) == sorted(batch)
            assert all(len(micro) == 2 for rank in accumulated for micro in rank)
        for start in range(len(batches) + 1):  # resuming after `start` steps: the rest of each rank's plan
            assert [r.micro_batches(epoch=1, start=start) for r in ranks] == [
                m[start * ranks[0].accumulation:] for m in per_rank]


def test_a_global_batch_that_does_not_divide_is_named(tmp_path):
    config = tiny_config(1, tmp_path, "micro_batch_size=4", "global_batch_size=12")
    assert [config.accumulation_steps(world) for world in (1, 3)] == [3, 1]
    with pytest.raises(ConfigError, match=r"global_batch_size: 12 is not a multiple of micro_batch_size x world size "
                                          r"= 4 x 2 = 8: each of the 2 ranks must accumulate a whole number"):
        config.accumulation_steps(2)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps: no longer a key; set global_batch_size"):
        tiny_config(1, tmp_path, "gradient_accumulation_steps=2")
