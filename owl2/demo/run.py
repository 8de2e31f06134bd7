"""`owl2 demo` end to end: synthetic data -> stage 1 -> stage 2 -> held-out answers -> report
(paper section 3.3's two-stage recipe on the toy preset; no official counterpart).

Training goes through `owl2.train.run` with `configs/train/demo-stage{1,2}.yaml`, the same trainer
and config format as cluster runs; the demo only fills in the output folders, the seed and the
data paths. The held-out split has images never used in training and one question per image; the
text-only questions are drawn afresh but, the arithmetic space being small, may repeat training ones.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "train"
STAGE1_CONFIG = CONFIGS / "demo-stage1.yaml"
STAGE2_CONFIG = CONFIGS / "demo-stage2.yaml"


@dataclass
class DemoSettings:
    """Sizes of one demo run; `quick()` is the CI-sized variant."""

    stage1_steps: int | None = None
    """Stage-1 optimizer steps (None: the config's `max_steps`)."""
    stage2_steps: int | None = None
    """Stage-2 optimizer steps (None: the config's `max_steps`)."""
    micro_batch_size: int | None = None
    """Samples per optimizer step in both stages (None: the configs' value)."""
    stage1_records: int = 3200
    """Synthetic caption records (one pass of stage 1 at the configs' sizes)."""
    stage2_records: int = 90000
    """Synthetic instruction records: questions, "describe the image" and text-only ones; one pass of stage 2
    at the configs' sizes, so no record repeats (with 20,000 seen 4.4 times, held-out accuracy trailed training
    accuracy by 5-7 points)."""
    question_cycle: tuple[str, ...] = (
        "yesno", "shape", "color", "yesno", "position", "shape", "yesno", "count", "shape", "yesno", "color",
    )  # fmt: skip
    """Types of the training questions, in turn. The captions already find an object by its kind and read its
    colour and place, so the questions weight what they leave out: yes/no 4 times in 11 and shape (an object found
    by its colour) 3 times; colour twice; position and count once each. The held-out questions stay balanced."""
    heldout: int = 250
    """Held-out image questions (balanced over the five types)."""
    text_only: int = 60
    """Text-only questions."""
    batch_size: int = 32
    """Questions per generation batch."""
    sheet_size: int = 16
    """Held-out images on the picture sheet."""

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A run of about a minute on two cores that still learns something measurable."""
        return cls(stage1_steps=5, stage2_steps=40, micro_batch_size=8, stage1_records=100, stage2_records=400,
                   heldout=25, text_only=10, sheet_size=8)  # fmt: skip


def write_text_questions(path: Path, count: int, seed: int) -> Path:
    """Write `count` text-only questions (`id`, `question`, `answer`, `question_type`) to a JSONL."""
    from owl2.data.synthetic import text_instruction

    rng = random.Random(f"{seed}-text-heldout")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            question, answer, kind = text_instruction(rng)
            f.write(json.dumps({"id": f"text-{i}", "question": question, "answer": answer, "question_type": kind}) + "\n")
    return path


def train_stage(config_path: Path, overrides: list[str]) -> tuple[Path, list[dict]]:
    """Run one stage with the real trainer; `(final folder, metrics records)`."""
    from owl2.train import load_train_config, run
    from owl2.train.metrics import read_metrics

    config = load_train_config(config_path, overrides)
    final = run(config)
    return final, read_metrics(config.output_dir)


def answer_file(model, processor, questions_path: Path, image_folder: Path, output: Path, batch_size: int,
                max_new_tokens: int = 8) -> dict:
    """Answer every question of a JSONL greedily; writes `output` and returns answers by id."""
    from owl2.eval.generation import answer_batch
    from owl2.eval.inputs import read_questions
    from owl2.processing.templates import PLACEHOLDER_PATTERN

    questions = read_questions(questions_path, image_folder)
    answers = {}
    with open(output, "w", encoding="utf-8") as f:
        for start in range(0, len(questions), batch_size):
            batch = questions[start : start + batch_size]
            for question, answer in zip(batch, answer_batch(model, processor, batch, max_new_tokens=max_new_tokens)):
                answers[question.id] = answer
                text = PLACEHOLDER_PATTERN.sub("", question.text).strip()
                f.write(json.dumps({"id": question.id, "question": text, "answer": answer, **question.extra}) + "\n")
    return answers


def run_demo(out: str | Path, seed: int = 0, settings: DemoSettings | None = None) -> dict:
    """Build the data, train both stages, answer the held-out questions, and write the report.

    Writes into `out`: `data/` (the synthetic set), `stage1/` and `stage2/` (training runs; the
    trained model is `stage2/final`), `answers.jsonl`, `text_answers.jsonl`, `report.json`,
    `loss_curve.png` and `answers.png` (the picture sheet).

    Args:
        out: The demo folder (created); it must not hold an earlier run's stage folders, which the
            trainer would resume from.
        seed: Seed of the data, the model init and the data order.
        settings: Sizes (default: the full demo).

    Returns:
        The report (also in `report.json`).

    Raises:
        FileExistsError: If `out` already holds `stage1/` or `stage2/`.
    """
    import torch

    from owl2.data import write_synthetic_dataset
    from owl2.demo.report import picture_sheet, plot_stages
    from owl2.eval import read_references, score
    from owl2.eval.generation import load_pretrained

    settings = settings or DemoSettings()
    out = Path(out)
    for stage in ("stage1", "stage2"):
        if (out / stage).exists():
            raise FileExistsError(f"{out / stage}: already holds a training run; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    wall: dict[str, float] = {}
    started = time.perf_counter()

    data_dir = out / "data"
    paths = write_synthetic_dataset(
        data_dir, seed=seed, num_stage1=settings.stage1_records, num_stage2=settings.stage2_records,
        num_heldout=settings.heldout, question_cycle=settings.question_cycle,
    )  # fmt: skip
    text_questions = write_text_questions(data_dir / "text_heldout.jsonl", settings.text_only, seed)
    wall["data"] = time.perf_counter() - started

    common = [f"seed={seed}", "data.synthetic=false", f"data.image_folder={paths['images']}",
              f"data.tokenizer={paths['tokenizer']}"]  # fmt: skip
    if settings.micro_batch_size is not None:
        common.append(f"micro_batch_size={settings.micro_batch_size}")
    stage1 = common + [f"output_dir={out / 'stage1'}", f"data.path={paths['stage1']}"]
    if settings.stage1_steps is not None:
        stage1.append(f"max_steps={settings.stage1_steps}")
    t = time.perf_counter()
    stage1_final, stage1_metrics = train_stage(STAGE1_CONFIG, stage1)
    wall["stage1"] = time.perf_counter() - t

    stage2 = common + [f"output_dir={out / 'stage2'}", f"data.path={paths['stage2']}", f"init_from={stage1_final}"]
    if settings.stage2_steps is not None:
        stage2.append(f"max_steps={settings.stage2_steps}")
    t = time.perf_counter()
    model_dir, stage2_metrics = train_stage(STAGE2_CONFIG, stage2)
    wall["stage2"] = time.perf_counter() - t

    t = time.perf_counter()
    model, processor = load_pretrained(model_dir, device="cpu", dtype=torch.float32)
    image_answers = answer_file(model, processor, paths["heldout"], paths["images"], out / "answers.jsonl", settings.batch_size)
    text_answers = answer_file(model, processor, text_questions, data_dir, out / "text_answers.jsonl", settings.batch_size)
    wall["answers"] = time.perf_counter() - t

    references, types = read_references(paths["heldout"])
    image_scores = score(image_answers, references, types, metric="exact")
    text_refs, text_types = read_references(text_questions)
    text_scores = score(text_answers, text_refs, text_types, metric="exact")

    plot_stages({"stage 1 (captions)": stage1_metrics, "stage 2 (instructions)": stage2_metrics}, out / "loss_curve.png")
    records = [json.loads(line) for line in paths["heldout"].read_text().splitlines()][: settings.sheet_size]
    sheet = [
        {
            "image": paths["images"] / r["image"],
            "question": r["conversations"][0]["value"].split("\n", 1)[-1],
            "answer": r["answer"],
            "reply": image_answers[r["id"]],
            "correct": score({r["id"]: image_answers[r["id"]]}, {r["id"]: [r["answer"]]}, metric="exact").overall == 1.0,
        }
        for r in records
    ]
    picture_sheet(sheet, out / "answers.png")
    wall["total"] = time.perf_counter() - started

    report = {
        "accuracy": image_scores.overall,
        "count": image_scores.count,
        "per_type": image_scores.per_type,
        "type_counts": image_scores.type_counts,
        "text_only_accuracy": text_scores.overall,
        "text_only_count": text_scores.count,
        "text_only_per_type": text_scores.per_type,
        "seed": seed,
        "steps": {"stage1": stage1_metrics[-1]["step"] if stage1_metrics else 0,
                  "stage2": stage2_metrics[-1]["step"] if stage2_metrics else 0},  # fmt: skip
        "loss": {
            "stage1_first": stage1_metrics[0]["loss"] if stage1_metrics else None,
            "stage1_last": stage1_metrics[-1]["loss"] if stage1_metrics else None,
            "stage2_first": stage2_metrics[0]["loss"] if stage2_metrics else None,
            "stage2_last": stage2_metrics[-1]["loss"] if stage2_metrics else None,
        },
        "wall_time_s": wall,
        "torch_threads": torch.get_num_threads(),
        "model": str(model_dir),
        "files": {"answers": "answers.jsonl", "loss_curve": "loss_curve.png", "picture_sheet": "answers.png"},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
