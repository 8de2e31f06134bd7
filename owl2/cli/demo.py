"""`owl2 demo`: build the synthetic data set, train the toy preset through both stages on CPU, answer
the held-out questions and score them (`owl2.demo.run_demo`).

Prints a progress bar per stage and a per-type table at the end; the report, loss curve and
picture sheet are in `--out`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from owl2.cli.main import UsageError


def add_parser(subparsers) -> None:
    """Register `owl2 demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="train a toy model on synthetic data (every stage, CPU) and score it on held-out questions",
        description="owl2 recipe: synthetic shapes -> stage 1 -> stage 2 -> held-out answers -> report.json, "
        "loss_curve.png, answers.png; about 15 minutes on a 2-core CPU. onellm recipe: synthetic images, video, "
        "audio, points and IMU -> image alignment -> progressive alignment -> instruction tuning, answers after "
        "every stage -> report.json, loss_curve.png, sheet_*.png. --quick takes about a minute.",
    )
    parser.add_argument("--recipe", choices=("owl2", "onellm"), default="owl2",
                        help="owl2: mPLUG-Owl2's two stages on images (default); onellm: OneLLM's four stages over "
                        "image, video, audio, point and IMU")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/demo, runs/onellm-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the init and the data order (default 0)")
    parser.add_argument("--quick", action="store_true", help="a short run (CI): fewer steps and questions")
    parser.add_argument("--sampler", choices=("uniform", "sequential"), default="uniform",
                        help="onellm: draw alignment batches from every modality so far (uniform, the paper's) or "
                        "from the new ones only (sequential, the baseline)")
    parser.add_argument("--stage1-steps", type=int, default=None, help="override stage-1 optimizer steps")
    parser.add_argument("--stage2-steps", type=int, default=None, help="override stage-2 optimizer steps")
    parser.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    """Run the demo and print its table; 0 on success."""
    from owl2.demo import DemoSettings, run_demo
    from owl2.demo.report import summary_table

    for name in ("stage1_steps", "stage2_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # the demo is a CPU run even on a machine with a GPU
    if args.recipe == "onellm":
        return run_onellm_command(args)
    if args.sampler != "uniform":
        raise UsageError("--sampler is a setting of --recipe onellm")
    args.out = args.out or Path("runs/demo")
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    if args.stage1_steps is not None:
        settings.stage1_steps = args.stage1_steps
    if args.stage2_steps is not None:
        settings.stage2_steps = args.stage2_steps
    try:
        report = run_demo(args.out, seed=args.seed, settings=settings)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    print(summary_table(report))
    print(f"report: {args.out / 'report.json'}; pictures: {args.out / 'answers.png'}; loss: {args.out / 'loss_curve.png'}")
    print(f"chat with it: owl2 chat --model {report['model']} --image {args.out / 'data' / 'images' / 'heldout_000000.png'}")
    return 0


def run_onellm_command(args: argparse.Namespace) -> int:
    """`owl2 demo --recipe onellm`: every stage of OneLLM's recipe, then its per-stage table; 0 on success."""
    from owl2.demo.onellm import OneLLMDemoSettings, run_onellm_demo, stage_table

    if args.stage1_steps is not None or args.stage2_steps is not None:
        raise UsageError("--stage1-steps and --stage2-steps are settings of --recipe owl2")
    out = args.out or Path("runs/onellm-demo")
    settings = OneLLMDemoSettings.quick() if args.quick else OneLLMDemoSettings()
    settings.sampler = args.sampler
    try:
        report = run_onellm_demo(out, seed=args.seed, settings=settings)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    print(stage_table(report))
    print(f"report: {out / 'report.json'}; pictures: {out}/sheet_*.png; loss: {out / 'loss_curve.png'}")
    audio = out / "data" / "audio" / "heldout_000000.wav"
    print(f"chat with it: owl2 chat --model {report['model']} --audio {audio}")
    return 0
