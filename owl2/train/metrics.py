"""Training metrics: `metrics.jsonl`, optional TensorBoard scalars, a loss-curve PNG (official
`--report_to tensorboard --logging_steps 1`), and on request each step's sample ids (`sample_ids.jsonl`).

The only module that imports tensorboard (through torch's `SummaryWriter`) and matplotlib.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
SAMPLE_IDS_FILE = "sample_ids.jsonl"
"""With `log_sample_ids`: `{"step": 4, "epoch": 1, "ranks": [[ids of rank 0], [ids of rank 1]]}` a step."""
CURVE_FILE = "loss_curve.png"


class StepLog:
    """A JSON-lines file of records keyed by `step`, appended to by rank 0."""

    def __init__(self, path: Path, resume_step: int = 0):
        """Open the log; on resume, drop lines after `resume_step` (they belong to the lost tail of a run)."""
        self.path = path
        kept = [line for line in self._lines() if json.loads(line)["step"] <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def _lines(self) -> list[str]:
        return [line for line in self.path.read_text().splitlines() if line.strip()] if self.path.is_file() else []

    def log(self, record: dict) -> None:
        """Append one record (with its `step`)."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class MetricsWriter:
    """Appends one JSON object per logged step to `output_dir/metrics.jsonl` (rank 0 only)."""

    def __init__(self, output_dir: str | Path, resume_step: int = 0, tensorboard: bool = True):
        """Open the log; on resume, drop lines after `resume_step` (they belong to the lost tail of a run).

        Args:
            output_dir: The run folder.
            resume_step: Last step whose lines stay.
            tensorboard: Also write scalars under `output_dir/tensorboard` if tensorboard is installed.
        """
        self.file = StepLog(Path(output_dir) / METRICS_FILE, resume_step)
        self.tb = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def log(self, record: dict) -> None:
        """Write one step's metrics (`step` plus scalars)."""
        self.file.log(record)
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(output_dir: str | Path, name: str = METRICS_FILE) -> list[dict]:
    """All records of `metrics.jsonl` (or of another step log of the run, e.g. `SAMPLE_IDS_FILE`)."""
    path = Path(output_dir) / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_loss_curve(output_dir: str | Path) -> Path | None:
    """Draw loss (and LR) against step into `output_dir/loss_curve.png`; None without records."""
    records = read_metrics(output_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(steps, [r["loss"] for r in records], color="tab:blue")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss", color="tab:blue")
    lr_ax = loss_ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in records], color="tab:orange", alpha=0.6)
    lr_ax.set_ylabel("lr", color="tab:orange")
    fig.tight_layout()
    path = Path(output_dir) / CURVE_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
