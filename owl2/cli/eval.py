"""`owl2 eval`: score a predictions JSONL against references (official `evaluate/evaluate_vqa.py` and
`evaluate_caption.py`, the scoring half).

Prints a per-type table (types from the references' `question_type` or `type`), a per-modality one
when the records name modalities, and the overall score; `--output` also writes the scores as JSON.
The metrics are `owl2.eval.METRICS`; the scoring itself is `owl2.eval.score`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from owl2.eval import METRICS, question_modalities, read_prediction_records, read_reference_records, score
from owl2.eval.answers import Reference
from owl2.eval.scoring import Metric


def add_parser(subparsers) -> None:
    """Register `owl2 eval`."""
    parser = subparsers.add_parser(
        "eval",
        help="score predicted answers against references (VQA accuracy, choice, caption metrics)",
        description="Score predicted answers as the papers' evaluation scripts do.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="metrics:\n" + "\n".join(f"  {name:<15} {m.summary}" for name, m in METRICS.items()),
    )
    parser.add_argument("--predictions", type=Path, required=True, help="JSONL of {id, answer} (from owl2 generate)")
    parser.add_argument(
        "--references", type=Path, required=True,
        help="JSONL of {id, answer | answers, [question_type | type], [modality | image | audio | ...]}",
    )  # fmt: skip
    parser.add_argument("--metric", choices=list(METRICS), default="vqa", help="how to score (default: vqa; see below)")
    parser.add_argument("--output", type=Path, default=None, help="also write the scores to this JSON file")
    parser.set_defaults(func=run_eval)


def check_references(metric: Metric, references: dict[str, Reference]) -> None:
    """Every reference answer is one the metric can use.

    Raises:
        ValueError: Naming the reference's `FILE:LINE` and what was expected.
    """
    if metric.check_reference is None:
        return
    for reference in references.values():
        for answer in reference.answers:
            try:
                metric.check_reference(answer)
            except ValueError as e:
                raise ValueError(f"{reference.location}: {e}") from None


def run_eval(args: argparse.Namespace) -> int:
    """Print the tables; 0 on success."""
    references = read_reference_records(args.references)
    predictions = read_prediction_records(args.predictions)
    check_references(METRICS[args.metric], references)
    scores = score(
        {qid: prediction.answer for qid, prediction in predictions.items()},
        {qid: reference.answers for qid, reference in references.items()},
        types={qid: reference.type for qid, reference in references.items() if reference.type is not None},
        metric=args.metric,
        modalities=question_modalities(references, predictions),
    )
    print(scores.table(metric=args.metric))
    if args.output is not None:
        result = {
            "metric": args.metric,
            "score": scores.overall,
            "count": scores.count,
            "per_type": scores.per_type,
            "type_counts": scores.type_counts,
            "per_modality": scores.per_modality,
            "modality_counts": scores.modality_counts,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0
