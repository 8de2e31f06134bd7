"""`owl2 train`: train one stage, in this process or in N processes on this node (`owl2.train.launch`).

    owl2 train --config configs/train/smoke-stage1.yaml [--set key=value ...]
    owl2 train --nproc 8 --config configs/train/stage2-instruct.yaml [--set key=value ...]

With `--nproc 1` (the default) it is `python -m owl2.train`. With more it runs the `deepspeed` launcher
and passes SIGTERM, SIGUSR1 and Ctrl-C to the ranks alone, waiting for their checkpoint. The exit
statuses are the training command's (`owl2.train.main`: 0 done, 75 stopped on a signal after a
checkpoint, 74 a write error, 2 a bad config, 1 a NaN loss, 130 a second Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    """Register `owl2 train`."""
    parser = subparsers.add_parser(
        "train", help="train one stage (one process, or --nproc N on this node under the deepspeed launcher)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nested keys; value parsed as YAML); repeatable")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes on this node (GPUs, or CPU processes with DS_ACCELERATOR=cpu; default 1)")
    parser.add_argument("--master-port", type=int, default=None, help="rendezvous port (default: a free one)")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train in this process, or launch `--nproc` processes; returns the training command's exit status."""
    from owl2.train.main import CONFIG_ERROR_EXIT, main

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    train_args = ["--config", args.config, *(arg for o in args.overrides for arg in ("--set", o))]
    if args.nproc == 1:
        return main(train_args)
    from owl2.train.config import ConfigError, load_train_config
    from owl2.train.launch import launch

    try:  # once here, not once per rank
        config = load_train_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"owl2 train: error: {e}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    return launch(args.nproc, train_args, config.output_dir, args.master_port)
