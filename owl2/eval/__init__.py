"""Scoring of generated answers: VQA accuracy (the standard and two variants), exact match,
multiple-choice accuracy, and the COCO caption metrics (BLEU, CIDEr-D, ROUGE-L)."""

from owl2.eval.answers import (
    iter_jsonl,
    question_modalities,
    read_prediction_records,
    read_predictions,
    read_reference_records,
    read_references,
    record_modality,
    record_type,
)
from owl2.eval.captions import bleu, cider_d, rouge_l
from owl2.eval.choice import choice_accuracy, parse_choice
from owl2.eval.ptb import ptb_tokenize
from owl2.eval.scoring import METRICS, Metric, Scores, score
from owl2.eval.vqa import (
    exact_match,
    normalize_answer,
    vqa_accuracy,
    vqa_mplug_owl2_accuracy,
    vqa_normalized_accuracy,
)

__all__ = [
    "METRICS",
    "Metric",
    "Scores",
    "bleu",
    "choice_accuracy",
    "cider_d",
    "exact_match",
    "iter_jsonl",
    "normalize_answer",
    "parse_choice",
    "ptb_tokenize",
    "question_modalities",
    "read_prediction_records",
    "read_predictions",
    "read_reference_records",
    "read_references",
    "record_modality",
    "record_type",
    "rouge_l",
    "score",
    "vqa_accuracy",
    "vqa_mplug_owl2_accuracy",
    "vqa_normalized_accuracy",
]
