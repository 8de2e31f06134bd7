"""VQA answer normalisation and scoring (official `evaluate/vqa_eval.py` `VQAEval`, itself the
standard VQA v2 evaluation; official `evaluate/evaluate_vqa.py` for the per-question loop).

The standard evaluation normalises a predicted answer in two steps: punctuation (strip it, or
replace it by a space, depending on how it is used; drop full stops that are not decimal points),
then words (lower-case, number words to digits, drop articles, restore contractions written
without an apostrophe). A prediction scores `min(1, matches / 3)` against the human answers,
averaged over the ten leave-one-out subsets; with a single reference answer this is exact match
after normalisation, which is what the `exact` metric computes for any reference.

These are pure functions over strings and lists; the `owl2 eval` command reads files and prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "id've": "i'd've", "i'dve": "i'd've", "im": "i'm",
    "ive": "i've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
"""Apostrophe-less spellings and their standard form. The official table keys a few entries with
capitals ("Im", "Ive", "Id've") that can never match its lower-cased words; they are lower-cased here."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
"""Number words the standard evaluation turns into digits ("none" counts as zero)."""

ARTICLES = frozenset({"a", "an", "the"})
"""Words dropped from answers."""

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
"""Characters removed (or turned into spaces) by the punctuation step; full stops are handled apart."""

_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern: a '.' not followed by a digit
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")


def normalize_punctuation(text: str) -> str:
    """The standard punctuation step.

    A mark next to a space (or any mark, when the text has a digit-comma-digit like "1,000") is
    removed; otherwise it becomes a space ("black-white" -> "black white"). Full stops not followed
    by a digit are removed ("dog." -> "dog", "2.5" stays).
    """
    out = text
    digit_comma = _DIGIT_COMMA.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def normalize_words(text: str) -> str:
    """The standard word step: lower-case, number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Normalise an answer as the standard VQA evaluation does.

    Example:
        >>> normalize_answer("Two dogs.")
        '2 dogs'
        >>> normalize_answer("a dog.")
        'dog'
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return normalize_words(normalize_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA v2 accuracy of one prediction against its human answers.

    With ten answers, each leave-one-out subset of nine scores `min(1, matches / 3)` and the
    scores are averaged. With fewer answers the same rule applies; with a single answer it is
    exact match after normalisation (there is no subset to leave one out of).

    Args:
        prediction: The model's answer (raw text).
        answers: The reference answers (raw text), one per annotator.

    Returns:
        A score in [0, 1].

    Raises:
        ValueError: If `answers` is empty.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    predicted = normalize_answer(prediction)
    references = [normalize_answer(a) for a in answers]
    if len(references) == 1:
        return float(predicted == references[0])
    scores = []
    for left_out in range(len(references)):
        matches = sum(1 for k, ref in enumerate(references) if k != left_out and ref == predicted)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference answer, else 0.0."""
    if not answers:
        raise ValueError("exact_match needs at least one reference answer")
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(a) for a in answers))


METRICS = {"vqa": vqa_accuracy, "exact": exact_match}
"""Scoring functions by name: `(prediction, answers) -> score in [0, 1]`."""


@dataclass
class Scores:
    """Mean scores, overall and per question type."""

    overall: float
    """Mean over every scored question."""
    count: int
    """Questions scored."""
    per_type: dict[str, float] = field(default_factory=dict)
    """Mean per type (empty when no question has a type)."""
    type_counts: dict[str, int] = field(default_factory=dict)
    """Questions per type."""

    def table(self, metric: str = "accuracy") -> str:
        """A plain-text table: one row per type (sorted), then the overall row."""
        rows = [(name, self.type_counts[name], self.per_type[name]) for name in sorted(self.per_type)]
        rows.append(("overall", self.count, self.overall))
        width = max(len("type"), *(len(r[0]) for r in rows))
        lines = [f"{'type':<{width}}  {'n':>6}  {metric:>9}"]
        lines += [f"{name:<{width}}  {n:>6}  {100 * score:>8.2f}%" for name, n, score in rows]
        return "\n".join(lines)


def score(
    predictions: dict[str, str],
    references: dict[str, Sequence[str]],
    types: dict[str, str] | None = None,
    metric: str = "vqa",
) -> Scores:
    """Score predictions against references, overall and per type.

    Args:
        predictions: Answer text by question id.
        references: Reference answers by question id; every id here must have a prediction.
        types: Question type by id (ids without one are counted only overall).
        metric: A key of `METRICS`.

    Returns:
        The mean scores.

    Raises:
        KeyError: If the metric is unknown or a reference id has no prediction (naming it).
    """
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise KeyError(f"no prediction for question id {missing[0]!r}{more}")
    fn = METRICS[metric]
    types = types or {}
    by_type: dict[str, list[float]] = {}
    all_scores = []
    for qid, answers in references.items():
        value = fn(predictions[qid], answers)
        all_scores.append(value)
        if qid in types:
            by_type.setdefault(types[qid], []).append(value)
    return Scores(
        overall=mean(all_scores),
        count=len(all_scores),
        per_type={name: mean(values) for name, values in by_type.items()},
        type_counts={name: len(values) for name, values in by_type.items()},
    )


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0.0 for no values."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0
