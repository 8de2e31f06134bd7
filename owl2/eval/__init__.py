"""Scoring of generated answers: the standard VQA normalisation, VQA accuracy and exact match."""

from owl2.eval.answers import iter_jsonl, read_predictions, read_references, record_type
from owl2.eval.vqa import METRICS, Scores, exact_match, normalize_answer, score, vqa_accuracy

__all__ = [
    "METRICS",
    "Scores",
    "exact_match",
    "iter_jsonl",
    "normalize_answer",
    "read_predictions",
    "read_references",
    "record_type",
    "score",
    "vqa_accuracy",
]
