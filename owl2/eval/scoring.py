"""The metrics `owl2 eval` offers, and scores overall, per question type and per modality (the
aggregation of official `evaluate/evaluate_vqa.py` and `evaluate_caption.py`).

Every metric scores a set of questions at once, from their predictions and reference answers. For
the per-question metrics (the VQA accuracies, exact match, choice, ROUGE-L) that is the mean of the
questions' scores; BLEU and CIDEr-D are corpus statistics, so a type's or modality's score is the
metric computed on that group alone (CIDEr-D then takes its idf from the group's references, as
running pycocoevalcap on the subset would).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from owl2.eval.captions import bleu, cider_d, rouge_l
from owl2.eval.choice import choice_accuracy, reference_choice
from owl2.eval.ptb import ptb_tokenize
from owl2.eval.vqa import exact_match, vqa_accuracy, vqa_mplug_owl2_accuracy, vqa_normalized_accuracy

Corpus = Callable[[Sequence[str], Sequence[Sequence[str]]], float]
"""`(predictions, reference answers of each) -> score`."""


@dataclass(frozen=True)
class Metric:
    """One way of scoring predictions."""

    corpus: Corpus
    """The score of a set of questions."""
    summary: str
    """What it computes, in a line (for `owl2 eval --help`)."""
    percent: bool = True
    """An accuracy, printed as a percentage; else printed as 100 x the score, as caption tables do."""
    check_reference: Callable[[str], object] | None = None
    """Raises `ValueError` for a reference answer the metric cannot use."""


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def per_question(fn: Callable[[str, Sequence[str]], float]) -> Corpus:
    """The corpus score of a per-question metric `fn(prediction, answers)`: the mean."""

    def corpus(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        return mean(fn(prediction, answers) for prediction, answers in zip(predictions, references))

    return corpus


def tokenized(scorer: Corpus) -> Corpus:
    """A caption scorer fed PTB-tokenized predictions and references, as `COCOEvalCap.evaluate` does."""

    def corpus(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        return scorer([ptb_tokenize(p) for p in predictions], [[ptb_tokenize(r) for r in refs] for refs in references])

    return corpus


def bleu_n(n: int) -> Corpus:
    """Corpus BLEU-n (pycocoevalcap's `Bleu(4)` reports BLEU-1 to BLEU-4 from one count)."""
    return lambda predictions, references: bleu(predictions, references)[n - 1]


METRICS: dict[str, Metric] = {
    "vqa": Metric(per_question(vqa_accuracy), "the standard VQA accuracy (GT-Vision-Lab vqaEval.py, as EvalAI)"),
    "vqa_normalized": Metric(
        per_question(vqa_normalized_accuracy), "VQA accuracy, the prediction and every answer always normalised"
    ),
    "vqa_mplug_owl2": Metric(per_question(vqa_mplug_owl2_accuracy), "VQA accuracy as mPLUG-Owl2's evaluate/vqa_eval.py"),
    "exact": Metric(per_question(exact_match), "the normalised prediction equals any normalised answer"),
    "choice": Metric(
        per_question(choice_accuracy), "the reply's option letter (A-E) equals the reference's",
        check_reference=reference_choice,
    ),
    "cider": Metric(tokenized(cider_d), "CIDEr-D as pycocoevalcap", percent=False),
    "bleu": Metric(tokenized(bleu_n(4)), "BLEU-4 as pycocoevalcap (corpus, closest reference length)", percent=False),
    **{f"bleu{n}": Metric(tokenized(bleu_n(n)), f"BLEU-{n} as pycocoevalcap", percent=False) for n in (1, 2, 3)},
    "rouge_l": Metric(tokenized(rouge_l), "ROUGE-L as pycocoevalcap (beta 1.2)", percent=False),
}  # fmt: skip
"""Metrics by name. Caption metrics tokenize both sides with `owl2.eval.ptb` first."""


@dataclass
class Scores:
    """Scores overall, per question type and per modality."""

    overall: float
    """The score of every question together."""
    count: int
    """Questions scored."""
    per_type: dict[str, float] = field(default_factory=dict)
    """Score per question type (empty when no question has a type)."""
    type_counts: dict[str, int] = field(default_factory=dict)
    """Questions per type."""
    per_modality: dict[str, float] = field(default_factory=dict)
    """Score per modality (empty when the records name none)."""
    modality_counts: dict[str, int] = field(default_factory=dict)
    """Questions per modality."""
    percent: bool = True
    """Whether the metric is an accuracy (printed with a % sign)."""

    def table(self, metric: str = "accuracy") -> str:
        """Plain text: one row per type (sorted) and the overall row; then the same per modality.

        Scores are printed times 100: with a % sign for accuracies, without for caption metrics.
        """
        sections = [("type", self.per_type, self.type_counts), ("modality", self.per_modality, self.modality_counts)]
        sections = [section for section in sections if section[1]] or [("type", {}, {})]
        width = max(len(name) for heading, scores, _ in sections for name in (heading, *scores, "overall"))
        blocks = []
        for heading, scores, counts in sections:
            rows = [(name, counts[name], scores[name]) for name in sorted(scores)]
            rows.append(("overall", self.count, self.overall))
            lines = [f"{heading:<{width}}  {'n':>6}  {metric:>9}"]
            lines += [f"{name:<{width}}  {n:>6}  {self._number(value)}" for name, n, value in rows]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def _number(self, value: float) -> str:
        return f"{100 * value:>8.2f}%" if self.percent else f"{100 * value:>9.2f}"


def score(
    predictions: dict[str, str],
    references: dict[str, Sequence[str]],
    types: dict[str, str] | None = None,
    metric: str = "vqa",
    modalities: dict[str, str] | None = None,
) -> Scores:
    """Score predictions against references, overall, per type and per modality.

    Args:
        predictions: Answer text by question id.
        references: Reference answers by question id; every id here must have a prediction.
        types: Question type by id (ids without one are counted only overall).
        metric: A key of `METRICS`.
        modalities: Modality by id (ids without one are counted only overall).

    Returns:
        The scores.

    Raises:
        KeyError: If the metric is unknown or a reference id has no prediction (naming it).
        ValueError: For a reference the metric cannot use (`choice`: one that is not a letter).
    """
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise KeyError(f"no prediction for question id {missing[0]!r}{more}")
    corpus = METRICS[metric].corpus

    def group_score(ids: list[str]) -> float:
        return corpus([predictions[qid] for qid in ids], [references[qid] for qid in ids]) if ids else 0.0

    per_type, type_counts = _groups(references, types or {}, group_score)
    per_modality, modality_counts = _groups(references, modalities or {}, group_score)
    return Scores(
        overall=group_score(list(references)),
        count=len(references),
        per_type=per_type,
        type_counts=type_counts,
        per_modality=per_modality,
        modality_counts=modality_counts,
        percent=METRICS[metric].percent,
    )


def _groups(
    references: dict[str, Sequence[str]], labels: dict[str, str], group_score: Callable[[list[str]], float]
) -> tuple[dict[str, float], dict[str, int]]:
    """Score and size of each label's questions."""
    members: dict[str, list[str]] = {}
    for qid in references:
        if qid in labels:
            members.setdefault(labels[qid], []).append(qid)
    return {name: group_score(ids) for name, ids in members.items()}, {name: len(ids) for name, ids in members.items()}
