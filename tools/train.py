"""Train one stage of mPLUG-Owl2 (official `mplug_owl2/train/train.py` entry point): `owl2.train.main`.

    python tools/train.py --config configs/train/smoke-stage1.yaml [--set key=value ...]
    deepspeed [--num_gpus N | --hostfile H] tools/train.py --config CONFIG.yaml [--set key=value ...]

Exit statuses (0 done, 75 stopped by a signal after a checkpoint: re-run to resume, 74 an output could
not be written, 2 a bad config, 1 a NaN loss) are listed in `owl2/train/main.py`.
"""

from __future__ import annotations

import sys

from owl2.train.main import main

if __name__ == "__main__":
    sys.exit(main())
