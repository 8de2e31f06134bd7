"""`owl2 eval`: score a predictions JSONL against references (official `evaluate/evaluate_vqa.py`,
the scoring half).

Prints a per-type table (types from the references' `question_type` or `type`) and the overall
score; `--output` also writes the scores as JSON. The scoring itself is `owl2.eval.score`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from owl2.eval import METRICS, read_predictions, read_references, score


def add_parser(subparsers) -> None:
    """Register `owl2 eval`."""
    parser = subparsers.add_parser(
        "eval",
        help="score predicted answers against references (VQA accuracy or exact match)",
        description="Score predicted answers with the standard VQA answer normalisation.",
    )
    parser.add_argument("--predictions", type=Path, required=True, help="JSONL of {id, answer} (from owl2 generate)")
    parser.add_argument(
        "--references", type=Path, required=True, help="JSONL of {id, answer | answers, [question_type | type]}"
    )
    parser.add_argument(
        "--metric", choices=sorted(METRICS), default="vqa",
        help="vqa: min(1, matches/3) over annotators (exact match for one answer); exact: equals any answer",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="also write the scores to this JSON file")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Print the per-type table; 0 on success."""
    references, types = read_references(args.references)
    predictions = read_predictions(args.predictions)
    scores = score(predictions, references, types, metric=args.metric)
    print(scores.table(metric=args.metric))
    if args.output is not None:
        result = {
            "metric": args.metric,
            "accuracy": scores.overall,
            "count": scores.count,
            "per_type": scores.per_type,
            "type_counts": scores.type_counts,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0
