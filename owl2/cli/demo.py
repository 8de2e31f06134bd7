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
        help="train the toy model on synthetic shapes (both stages, CPU) and score it on held-out questions",
        description="Synthetic data -> stage 1 -> stage 2 -> held-out answers -> report.json, loss_curve.png, "
        "answers.png. About 15 minutes on a 2-core CPU; --quick takes about a minute.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the init and the data order (default 0)")
    parser.add_argument("--quick", action="store_true", help="a short run (CI): fewer steps and questions")
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
