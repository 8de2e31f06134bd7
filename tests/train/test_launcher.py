"""The real `deepspeed` launcher with 2 CPU processes: ZeRO-2 stage 1 and ZeRO-3 stage 2 on the smoke
configs; the loss falls, stage 1 keeps text-only logits bit-identical, stage 2 changes them, and
2 processes match 1 process (same global batch, gradients clipped by the trainer in one and by DeepSpeed
in the other) within tolerance. A SIGTERM to one rank stops both after the same step with exit status 75,
and the re-run ends bit-identical to the uninterrupted run. A SIGTERM to the whole process group of
`owl2 train --nproc 2` checkpoints on both ranks too, exits 75 and leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import torch

from owl2.train import manifest, run
from owl2.train.launch import free_port
from owl2.train import checkpoint as ckpt
from owl2.train.metrics import read_metrics
from owl2.train.preemption import REQUEUE_EXIT, REQUEUE_FILE
from tests.conftest import REPO
from tests.train.conftest import SMOKE, TINY, assert_same_weights, logits, tiny_config, weights

DEEPSPEED = Path(sys.executable).with_name("deepspeed")
STEPS = 6
STAGE1 = ["data.synthetic_records=48", f"max_steps={STEPS}", "gradient_clipping=0.05"]  # clipping in every step

pytestmark = pytest.mark.skipif(shutil.which(str(DEEPSPEED)) is None, reason="deepspeed launcher not installed")


def launcher_command(script: str, stage: int, output_dir: Path, *overrides: str) -> tuple[list[str], dict[str, str]]:
    """The `deepspeed --num_gpus 2` command (CPU accelerator, a free port) for `script` on the smoke config of
    `stage`, and its environment."""
    port = free_port()
    sets = [arg for o in [*TINY, f"output_dir={output_dir}", *overrides] for arg in ("--set", o)]
    cmd = [str(DEEPSPEED), "--num_gpus", "2", "--master_port", str(port), script, "--config", str(SMOKE[stage]), *sets]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["DS_ACCELERATOR"] = "cpu"
    return cmd, env


def launch_script(script: str, stage: int, output_dir: Path, *overrides: str,
                  status: int = 0) -> subprocess.CompletedProcess:
    """Run `script` under `deepspeed --num_gpus 2` (CPU accelerator) with the smoke config of `stage`; check its
    exit status."""
    cmd, env = launcher_command(script, stage, output_dir, *overrides)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == status, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def launch(stage: int, output_dir: Path, *overrides: str) -> Path:
    """Run tools/train.py under `deepspeed --num_gpus 2` (CPU accelerator) and return `final/`."""
    launch_script("tools/train.py", stage, output_dir, *overrides)
    return output_dir / "final"


def assert_loss_falls(output_dir: Path) -> None:
    # per-step losses of different micro-batches: a text-only one (modality-pure megabatches, shuffled in among
    # the image ones; the 6th here) has a much higher loss this early, so compare the best of each end
    losses = [r["loss"] for r in read_metrics(output_dir)]
    assert len(losses) >= 4 and min(losses[len(losses) // 2:]) < min(losses[:2]), losses


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, toy_init) -> Path:
    out = tmp_path_factory.mktemp("stage1-zero2")
    return launch(1, out, *STAGE1, f"init_from={toy_init}", "deepspeed=configs/deepspeed/zero2.json")


def test_stage1_zero2_two_processes(stage1, toy_init):
    assert_loss_falls(stage1.parent)
    assert torch.equal(logits(stage1, with_image=False), logits(toy_init, with_image=False))
    assert not torch.allclose(logits(stage1, with_image=True), logits(toy_init, with_image=True))


def test_two_processes_match_one(stage1, toy_init, tmp_path):
    # the same global batch: 1 process x 8 samples under ZeRO-0 against 2 processes x 4 under ZeRO-2
    single = run(tiny_config(1, tmp_path, *STAGE1, f"init_from={toy_init}", "micro_batch_size=8",
                             "deepspeed=configs/deepspeed/zero0.json"))
    one, two = read_metrics(single.parent), read_metrics(stage1.parent)
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        # the trainer clips under ZeRO-0 (one process), DeepSpeed under ZeRO-2: the same norm, both clipped
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4) and a["grad_norm"] > 0.05
    # the loss is a global token mean, so only summation order differs; compare updates relative to their size
    a, b, start = weights(single), weights(stage1), weights(toy_init)
    moved = sum(float((a[n] - start[n]).pow(2).sum()) for n in a) ** 0.5
    differ = sum(float((a[n] - b[n]).pow(2).sum()) for n in a) ** 0.5
    print(f"update norm {moved:.4g}, 1-vs-2-process difference {differ:.4g}")
    assert differ < 1e-3 * moved


def test_stage2_zero3_two_processes(stage1, tmp_path):
    final = launch(2, tmp_path, f"init_from={stage1}", f"max_steps={STEPS}", "data.synthetic_records=48",
                   "deepspeed=configs/deepspeed/zero3.json")
    assert_loss_falls(tmp_path)
    assert not torch.allclose(logits(final, with_image=False), logits(stage1, with_image=False))
    assert set(weights(final)) == set(weights(stage1))  # consolidated, not ZeRO-3 shards


def test_sigterm_to_one_rank_stops_both_and_the_rerun_matches(stage1, toy_init, tmp_path):
    # one launch: the preempted run, then the re-run in the same processes (see tests/train/preempt_rank1.py)
    done = launch_script("tests/train/preempt_rank1.py", 1, tmp_path, *STAGE1, f"init_from={toy_init}",
                         "deepspeed=configs/deepspeed/zero2.json", status=REQUEUE_EXIT)
    assert "exit statuses: 75, then 0" in done.stdout
    assert "stopped after step 3 of 6 on a stop signal to another rank; checkpoint-3 is written" in done.stderr
    assert json.loads((tmp_path / "checkpoint-3" / ckpt.STATE_FILE).read_text())["step"] == 3
    assert manifest.verify(tmp_path / "checkpoint-3") == []
    assert {"rng-0.safetensors", "rng-1.safetensors"} <= set(manifest.read_manifest(tmp_path / "checkpoint-3"))
    assert [c.name for c in ckpt.checkpoints(tmp_path)] == ["checkpoint-3", f"checkpoint-{STEPS}"]
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, STEPS + 1))
    assert_same_weights(tmp_path / "final", stage1)



def test_sigterm_to_the_process_group_of_owl2_train_checkpoints_on_every_rank(toy_init, tmp_path):
    # Kubernetes' way (`tini -g`), and a terminal's Ctrl-C: the signal goes to the whole process group of
    # `owl2 train --nproc 2`, which passes it to the ranks alone and exits 75 once they have checkpointed
    # (that the re-run of such a checkpoint ends bit-identical is the test above's: the same checkpoint path)
    command, env = launcher_command("tools/train.py", 1, tmp_path, *STAGE1, f"init_from={toy_init}",
                                    "deepspeed=configs/deepspeed/zero2.json")
    train = [str(Path(sys.executable).with_name("owl2")), "train", "--nproc", "2", *command[command.index("--config"):]]
    process = subprocess.Popen(train, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines, training = [], threading.Event()

    def read_stderr():
        for line in process.stderr:
            lines.append(line)
            if "pretrain:" in line:  # rank 0's progress bar: its stop handlers are installed
                training.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert training.wait(timeout=300), "".join(lines)[-3000:]
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=300) == REQUEUE_EXIT, "".join(lines)[-3000:]
    finally:  # a failed test leaves no training behind
        for child in psutil.Process().children(recursive=True):
            child.kill()
    reader.join(timeout=10)
    log = "".join(lines)
    assert "owl2 train: SIGTERM passed to ranks" in log
    marker = json.loads((tmp_path / REQUEUE_FILE).read_text())
    step = marker["step"]
    assert 1 <= step < STEPS and f"stopped after step {step} of {STEPS} on SIGTERM" in log
    assert manifest.verify(tmp_path / f"checkpoint-{step}") == []
    assert {"rng-0.safetensors", "rng-1.safetensors"} <= set(manifest.read_manifest(tmp_path / f"checkpoint-{step}"))
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, step + 1))
    assert not psutil.Process().children(recursive=True)  # the launcher's session is gone too
    port = command[command.index("--master_port") + 1]
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))  # nothing left in RAM

