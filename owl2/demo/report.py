"""What `owl2 demo` leaves behind besides `report.json`: the loss curve of both stages, a picture
sheet of held-out answers, and the table printed at the end. No official counterpart.

The one place matplotlib is imported (`_pyplot`: the Agg backend, nothing opens a window).
"""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_stages(stages: dict[str, list[dict]], path: Path) -> Path:
    """Loss against step for each stage, one after the other on one axis.

    Args:
        stages: Stage name -> its `metrics.jsonl` records (`step`, `loss`), in run order.
        path: The PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    for name, records in stages.items():
        if not records:
            continue
        steps = [offset + r["step"] for r in records]
        ax.plot(steps, [r["loss"] for r in records], label=name)
        offset = steps[-1]
        ax.axvline(offset, color="grey", linewidth=0.5)
    ax.set_xlabel("optimizer step (both stages)")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def picture_sheet(items: list[dict], path: Path, columns: int = 4) -> Path:
    """A grid of held-out images with their question, the expected answer and the model's reply.

    Args:
        items: `{"image": Path, "question": str, "answer": str, "reply": str, "correct": bool}` each.
        path: The PNG to write.
        columns: Images per row.
    """
    from owl2.demo.media_sheet import media_sheet  # the sheet of any modality; it imports `_pyplot` from here

    return media_sheet("image", [{**item, "input": item["image"]} for item in items], path, columns)


def summary_table(report: dict) -> str:
    """The lines printed at the end of the demo."""
    lines = [f"{'question type':<16}{'n':>6}{'accuracy':>11}"]
    for name, value in sorted(report["per_type"].items()):
        lines.append(f"{name:<16}{report['type_counts'][name]:>6}{100 * value:>10.1f}%")
    lines.append(f"{'image (held-out)':<16}{report['count']:>6}{100 * report['accuracy']:>10.1f}%")
    lines.append(f"{'text-only':<16}{report['text_only_count']:>6}{100 * report['text_only_accuracy']:>10.1f}%")
    steps = report["steps"]
    wall = report["wall_time_s"]
    lines.append(
        f"steps: stage 1 {steps['stage1']}, stage 2 {steps['stage2']}; wall time {wall['total']:.0f} s "
        f"(data {wall['data']:.0f}, stage 1 {wall['stage1']:.0f}, stage 2 {wall['stage2']:.0f}, answers {wall['answers']:.0f})"
    )
    return "\n".join(lines)
