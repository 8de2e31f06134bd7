"""Train one stage of mPLUG-Owl2 (official `mplug_owl2/train/train.py` entry point).

    python tools/train.py --config configs/train/smoke-stage1.yaml [--set key=value ...]
    deepspeed [--num_gpus N | --hostfile H] tools/train.py --config CONFIG.yaml [--set key=value ...]
"""

from __future__ import annotations

import argparse

from owl2.train import load_train_config, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for nested keys; value parsed as YAML); repeatable")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the launcher
    args = parser.parse_args(argv)
    final = run(load_train_config(args.config, args.overrides))
    print(f"final model: {final}")


if __name__ == "__main__":
    main()
