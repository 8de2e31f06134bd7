"""Training: stage policies, AdamW groups, schedules and the DeepSpeed loop (paper section 3.3).

Example:
    >>> from owl2.train import load_train_config, run
    >>> final = run(load_train_config("configs/train/smoke-stage1.yaml", ["output_dir=runs/s1"]))
"""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "owl2.train.config",
    "DataConfig": "owl2.train.config",
    "OptimConfig": "owl2.train.config",
    "TrainConfig": "owl2.train.config",
    "load_train_config": "owl2.train.config",
    "NonFiniteLossError": "owl2.train.loop",
    "OutputWriteError": "owl2.train.checkpoint",
    "Preempted": "owl2.train.preemption",
    "run": "owl2.train.loop",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
