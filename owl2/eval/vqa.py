"""VQA accuracy three ways: the standard script, mPLUG-Owl2's copy of an older version of it, and
a lenient rule that normalises every answer.

A prediction scores `min(1, matches / 3)` against the human answers, averaged over the subsets that
leave one annotator out (ten for VQA v2). What differs is which answers are normalised before they
are compared, and how:

- `vqa_accuracy`, the standard: GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py`
  since commit a013f00 ("Fixed processing answers bug", 2021), the script EvalAI runs for VQA v2
  test-dev and test-std. It strips whitespace from every answer; then, only when the annotators
  disagree (`len(set(answers)) > 1`), it normalises the prediction and the answers (punctuation,
  then digits/articles/contractions). When they agree, the prediction must equal their answer as
  written: "Yes", "two" or "a dog" against ten "yes", "2" or "dog" scores 0. Papers' VQA v2 test-dev
  numbers are this script's, run by EvalAI on predictions that were first passed through mmf's
  `EvalAIAnswerProcessor` (mPLUG-Owl2's `evaluate_vqa.py` does so for test-dev), which normalises
  them much as `normalize_answer` does.
- `vqa_mplug_owl2_accuracy`: X-PLUG/mPLUG-Owl `mPLUG-Owl2/mplug_owl2/evaluate/vqa_eval.py`, the same
  script before a013f00 (also LAVIS's copy). It always normalises the prediction, and the answers
  only when they disagree and only for punctuation. mPLUG-Owl2's validation-split numbers (VQA v2
  val, OK-VQA, TextVQA val) come from it.
- `vqa_normalized_accuracy`: normalise the prediction and every answer, always (owl2's rule before
  the standard became the default; no published script). The most lenient of the three; on raw
  model output it approximates EvalAI's score of processed predictions (not exactly: mmf's processor
  also drops commas and question marks and splits "'s").

The tables and steps below are the script's, quirks included: its contraction table keys "Im",
"Ive", "Id've" and "I'dve" with capitals, so they never match its lower-cased words; its full-stop
pattern `(?!<=\\d)(\\.)(?!\\d)` means "a '.' not followed by a digit" (the look-behind is mistyped);
and it passes `re.UNICODE` (32) where `re.sub` takes its count, so only the first 32 full stops go.
The one deliberate departure: with a single reference answer there is no annotator to leave out and
the script would score 0 for anything; here it is exact match (after whichever normalisation the
variant applies).

These are pure functions over strings and lists; `owl2.eval.scoring` aggregates them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
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
"""Apostrophe-less spellings and their standard form, the script's `contractions` verbatim (its
capitalised keys included, which never match)."""

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
"""Number words turned into digits (the script's `manualMap`; "none" counts as zero)."""

ARTICLES = ("a", "an", "the")
"""Words dropped from answers."""

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
"""Marks removed (or turned into spaces) by the punctuation step, in the script's order; full stops apart."""

_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the script's pattern: a '.' not followed by a digit
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PERIOD_COUNT = re.UNICODE  # the script's third argument to `sub`, which is the count: 32


def strip_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip the ends (the script's first step on every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The script's `processPunctuation`.

    A mark next to a space in the text (or any mark, when the text has a digit-comma-digit such as
    "1,000") is removed; otherwise it becomes a space ("black-white" -> "black white"). Then the
    first 32 full stops not followed by a digit are removed ("dog." -> "dog", "2.5" stays).
    """
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The script's `processDigitArticle`: lower-case, number words to digits, drop articles, restore
    contractions, single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Every step of the standard evaluation: whitespace, punctuation, then digits/articles/contractions.

    Example:
        >>> normalize_answer("Two dogs.")
        '2 dogs'
        >>> normalize_answer("a dog.")
        'dog'
    """
    return process_digit_article(process_punctuation(strip_whitespace(text)))


def leave_one_out(prediction: str, answers: Sequence[str]) -> float:
    """`min(1, matches / 3)` averaged over the subsets that leave one answer out.

    The script leaves out one answer record at a time (VQA v2 records differ by `answer_id`), so
    equal answers still count separately; here answer `k` is left out in subset `k`. With a single
    answer this is exact match (the script would compare against no answer and give 0).

    Raises:
        ValueError: If `answers` is empty.
    """
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    if len(answers) == 1:
        return float(prediction == answers[0])
    matches = sum(answer == prediction for answer in answers)
    # leaving out a matching answer leaves matches - 1 of them; leaving out another leaves all
    scores = [min(1.0, (matches - (answer == prediction)) / 3) for answer in answers]
    return sum(scores) / len(scores)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The standard VQA accuracy (GT-Vision-Lab `vqaEval.py`, the script EvalAI runs).

    Whitespace is stripped from the prediction and every answer; the rest of the normalisation
    applies only when the answers are not all the same.

    Example:
        >>> vqa_accuracy("Yes", ["yes"] * 10)  # the annotators agree: compared as written
        0.0
        >>> vqa_accuracy("Yes", ["yes"] * 9 + ["yes."])  # they disagree: both sides normalised
        1.0

    Args:
        prediction: The model's answer (raw text).
        answers: The reference answers (raw text), one per annotator.

    Returns:
        A score in [0, 1].

    Raises:
        ValueError: If `answers` is empty.
    """
    prediction = strip_whitespace(prediction)
    answers = [strip_whitespace(answer) for answer in answers]
    if len(set(answers)) > 1:
        prediction = process_digit_article(process_punctuation(prediction))
        answers = [process_digit_article(process_punctuation(answer)) for answer in answers]
    return leave_one_out(prediction, answers)


def vqa_mplug_owl2_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy as mPLUG-Owl2's `evaluate/vqa_eval.py` computes it (the standard script before a013f00).

    The prediction is always normalised; the answers are taken as written, except that when they are
    not all the same their punctuation is processed (only that: "two" stays "two", "The dog" stays).

    Args:
        prediction: The model's answer (raw text).
        answers: The reference answers (raw text), one per annotator.

    Returns:
        A score in [0, 1].

    Raises:
        ValueError: If `answers` is empty.
    """
    prediction = normalize_answer(prediction)
    if len(set(answers)) > 1:
        answers = [process_punctuation(answer) for answer in answers]
    return leave_one_out(prediction, answers)


def vqa_normalized_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy with the prediction and every answer normalised (`normalize_answer`), always.

    Args:
        prediction: The model's answer (raw text).
        answers: The reference answers (raw text), one per annotator.

    Returns:
        A score in [0, 1].

    Raises:
        ValueError: If `answers` is empty.
    """
    return leave_one_out(normalize_answer(prediction), [normalize_answer(answer) for answer in answers])


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference answer, else 0.0.

    Raises:
        ValueError: If `answers` is empty.
    """
    if not answers:
        raise ValueError("exact match needs at least one reference answer")
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(answer) for answer in answers))
