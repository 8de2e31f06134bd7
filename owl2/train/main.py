"""The training command (official `mplug_owl2/train/train.py` entry point), with exit statuses a job
script or scheduler can act on. `python -m owl2.train` runs it (`tools/train.py` gives the same statuses
only once it calls `main` rather than `run`):

    python -m owl2.train --config configs/train/smoke-stage1.yaml [--set key=value ...]
    deepspeed --num_gpus 2 --module owl2.train --config CONFIG.yaml [--set key=value ...]

Exit statuses (the failures print one line on stderr, no traceback; `OWL2_DEBUG=1` shows it, as for
the `owl2` command):

| status | meaning |
| --- | --- |
| 0 | finished: `final/` written |
| 1 | the loss became NaN or inf (`NonFiniteLossError`; the line names the step and the last checkpoint) |
| 2 | a bad training config (`ConfigError`; the line names the key) |
| 74 | `EX_IOERR`: `output_dir`, a checkpoint or `final/` could not be written (`OutputWriteError`) |
| 75 | `EX_TEMPFAIL`: stopped by SIGTERM, SIGUSR1 or Ctrl-C after writing a checkpoint: requeue / re-run (rank 0 also writes `output_dir/requeue.json`, which a job script can test when a launcher reports its own status) |
| 130 | a second Ctrl-C: stopped at once, nothing saved since the last checkpoint |
"""

from __future__ import annotations

import argparse
import os
import sys

from owl2.constants import debug_enabled
from owl2.train.preemption import REQUEUE_EXIT, REQUEUE_FILE, Preempted

WRITE_ERROR_EXIT = 74
"""Exit status when an output could not be written (`EX_IOERR`)."""
CONFIG_ERROR_EXIT = 2
"""Exit status of a bad config (as the `owl2` command's bad input)."""
NON_FINITE_EXIT = 1
"""Exit status of a NaN or inf loss."""
INTERRUPTED_EXIT = 130
"""Exit status of a second Ctrl-C (128 + SIGINT, as a shell reports it)."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of the training command."""
    parser = argparse.ArgumentParser(prog="owl2.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nested keys; value parsed as YAML); repeatable")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the launcher
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train one stage as `--config` and `--set` say.

    Args:
        argv: Arguments without the program name (defaults to `sys.argv[1:]`).

    Returns:
        The exit status (see the module docstring).
    """
    args = build_parser().parse_args(argv)
    from owl2.train.checkpoint import OutputWriteError  # torch: after the parser, so --help is instant
    from owl2.train.config import ConfigError, load_train_config
    from owl2.train.loop import NonFiniteLossError, run

    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    prefix = f"owl2.train (rank {rank})" if world != "1" else "owl2.train"
    debug = debug_enabled()
    config = None
    try:
        config = load_train_config(args.config, args.overrides)
        final = run(config)
    except Preempted as e:
        if rank == "0":
            print(f"{prefix}: {e} (exit status {REQUEUE_EXIT}; {REQUEUE_FILE} written)", file=sys.stderr, flush=True)
        return REQUEUE_EXIT
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; the last checkpoint stands", file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT
    except (OutputWriteError, ConfigError, NonFiniteLossError) as e:
        if debug:
            raise
        print(f"{prefix}: error: {e}", file=sys.stderr, flush=True)
        if isinstance(e, OutputWriteError):
            return WRITE_ERROR_EXIT
        return CONFIG_ERROR_EXIT if isinstance(e, ConfigError) else NON_FINITE_EXIT
    print(f"final model: {final}")
    return 0
