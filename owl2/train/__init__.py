"""Training: stage policies, AdamW groups, schedules and the DeepSpeed loop (paper section 3.3).

Example:
    >>> from owl2.train import load_train_config, run
    >>> final = run(load_train_config("configs/train/smoke-stage1.yaml", ["output_dir=runs/s1"]))
"""

from owl2.train.config import ConfigError, DataConfig, OptimConfig, TrainConfig, load_train_config
from owl2.train.loop import NonFiniteLossError, run

__all__ = ["ConfigError", "DataConfig", "NonFiniteLossError", "OptimConfig", "TrainConfig", "load_train_config", "run"]
