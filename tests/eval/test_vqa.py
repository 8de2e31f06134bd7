"""VQA accuracy: the standard script (GT-Vision-Lab `vqaEval.py` at a013f00, what EvalAI runs), mPLUG-Owl2's
`evaluate/vqa_eval.py` (the script before a013f00), and the always-normalised rule, each against a restatement
of the script written here from its code, on hand-made questions that exercise its quirks.

The restatements keep the scripts' shape (answer records with an `answer_id`, left out by comparing records)
and carry their own copies of the tables, with only the contractions these questions use; the full tables
are pinned to the scripts' by a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from owl2.eval import exact_match, normalize_answer, score, vqa_accuracy, vqa_mplug_owl2_accuracy, vqa_normalized_accuracy
from owl2.eval import vqa as production

# ---------------------------------------------------------------------------------------------------------------
# The scripts, restated


MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
              "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = ["a", "an", "the"]
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


class ScriptSteps:
    """`processPunctuation` and `processDigitArticle` as both scripts write them."""

    def __init__(self):
        self.contractions = {"dont": "don't", "isnt": "isn't", "Im": "I'm", "Ive": "I've", "somebody'd": "somebodyd"}
        self.manual_map = dict(MANUAL_MAP)  # grows: the script looks words up with setdefault
        self.articles = ARTICLES
        self.period_strip = re.compile(r"(?!<=\d)(\.)(?!\d)")
        self.comma_strip = re.compile(r"(\d)(\,)(\d)")
        self.punct = PUNCT

    def process_punctuation(self, in_text):
        out_text = in_text
        for p in self.punct:
            if (p + " " in in_text or " " + p in in_text) or (re.search(self.comma_strip, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        return self.period_strip.sub("", out_text, re.UNICODE)  # as written: the third argument is the count

    def process_digit_article(self, in_text):
        out_text = []
        for word in in_text.lower().split():
            word = self.manual_map.setdefault(word, word)
            if word not in self.articles:
                out_text.append(word)
        for word_id, word in enumerate(out_text):
            if word in self.contractions:
                out_text[word_id] = self.contractions[word]
        return " ".join(out_text)

    @staticmethod
    def accuracy(res_ans, gt_records):
        gt_acc = []
        for gt_datum in gt_records:
            other = [item for item in gt_records if item != gt_datum]
            matching = [item for item in other if item["answer"] == res_ans]
            gt_acc.append(min(1, float(len(matching)) / 3))
        return float(sum(gt_acc)) / len(gt_acc)


class StandardScript(ScriptSteps):
    """GT-Vision-Lab/VQA `vqaEval.py` `evaluate`, since a013f00, for one question."""

    def score(self, prediction, answers):
        gts = [{"answer": a, "answer_id": k + 1} for k, a in enumerate(answers)]
        for ans in gts:
            ans["answer"] = ans["answer"].replace("\n", " ").replace("\t", " ").strip()
        res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
        if len(set(ans["answer"] for ans in gts)) > 1:
            for ans in gts:
                ans["answer"] = self.process_digit_article(self.process_punctuation(ans["answer"]))
            res_ans = self.process_digit_article(self.process_punctuation(res_ans))
        return self.accuracy(res_ans, gts)


class MplugOwl2Script(ScriptSteps):
    """X-PLUG/mPLUG-Owl `mPLUG-Owl2/mplug_owl2/evaluate/vqa_eval.py` `evaluate`, for one question."""

    def score(self, prediction, answers):
        gts = [{"answer": a, "answer_id": k + 1} for k, a in enumerate(answers)]
        res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
        res_ans = self.process_digit_article(self.process_punctuation(res_ans))
        if len(set(ans["answer"] for ans in gts)) > 1:
            for ans in gts:
                ans["answer"] = self.process_punctuation(ans["answer"])
        return self.accuracy(res_ans, gts)


class NormalizedRule(ScriptSteps):
    """Every step of the standard on the prediction and every answer, always."""

    def normalize(self, text):
        return self.process_digit_article(self.process_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))

    def score(self, prediction, answers):
        gts = [{"answer": self.normalize(a), "answer_id": k + 1} for k, a in enumerate(answers)]
        return self.accuracy(self.normalize(prediction), gts)


# ---------------------------------------------------------------------------------------------------------------
# Hand-made questions: (prediction, the annotators' answers), each named after what it exercises

QUIRKS = {
    "agree: compared as written (case)": ("Yes", ["yes"] * 10),
    "agree: number word": ("two", ["2"] * 10),
    "agree: article": ("a dog", ["dog"] * 10),
    "agree: contraction": ("dont know", ["don't know"] * 10),
    "agree: full stop": ("dog.", ["dog"] * 10),
    "agree: 'none' is zero": ("none", ["0"] * 10),
    "whitespace of the prediction always stripped": ("  yes\n", ["yes"] * 10),
    "tab inside the prediction": ("yes\tplease", ["yes please"] * 5 + ["yes"] * 5),
    "answers that differ only by whitespace agree (standard), not in mPLUG-Owl2's": ("yes", ["yes"] * 9 + [" yes"]),
    "disagree: case normalised on both sides": ("yes", ["yes"] * 2 + ["Yes"] * 8),
    "disagree: digits normalised (not in mPLUG-Owl2's answers)": ("2", ["2"] * 2 + ["two"] * 8),
    "disagree: prediction's number word": ("Two", ["2"] * 4 + ["3"] * 6),
    "mark between words becomes a space": ("black-white", ["black white"] * 5 + ["black and white"] * 5),
    "mark next to a space is removed": ("yes , it is", ["yes it is"] * 4 + ["yes"] * 6),
    "digit-comma-digit: every mark removed": ("1,000-2", ["10002"] * 4 + ["1000"] * 6),
    "decimal point kept": ("2.5", ["2.5"] * 5 + ["2.50"] * 5),
    "only the first 32 full stops removed": ("yes" + "." * 33, ["yes"] * 5 + ["no"] * 5),
    "capitalised contraction keys never match": ("im", ["im"] * 2 + ["i'm"] * 8),
    "reverse contraction somebody'd -> somebodyd": ("somebody'd", ["somebodyd"] * 8 + ["somebody'd"] * 2),
    "articles dropped anywhere": ("The man in a hat", ["man in hat"] * 3 + ["man"] * 7),
    "three matches: full credit in 7 of 10 subsets": ("2", ["2"] * 3 + ["3"] * 7),
    "one match: a third in 9 of 10 subsets": ("2", ["2"] + ["3"] * 9),
    "five annotators (OK-VQA style)": ("red", ["red", "red", "maroon", "dark red", "red"]),
    "no match": ("cat", ["dog"] * 10),
}

VARIANTS = [
    (vqa_accuracy, StandardScript()),
    (vqa_mplug_owl2_accuracy, MplugOwl2Script()),
    (vqa_normalized_accuracy, NormalizedRule()),
]


@pytest.mark.parametrize("fn, script", VARIANTS, ids=["standard", "mplug_owl2", "normalized"])
@pytest.mark.parametrize("case", list(QUIRKS))
def test_each_variant_equals_its_script(fn, script, case):
    prediction, answers = QUIRKS[case]
    assert fn(prediction, answers) == pytest.approx(script.score(prediction, answers), abs=1e-12)


def test_the_quirks_score_as_the_scripts_do():
    # spelled out, so that a wrong restatement above cannot hide a wrong production rule
    expected = {  # case: (standard, mPLUG-Owl2, normalised)
        "agree: compared as written (case)": (0.0, 1.0, 1.0),
        "agree: number word": (0.0, 1.0, 1.0),
        "agree: article": (0.0, 1.0, 1.0),
        "agree: contraction": (0.0, 1.0, 1.0),
        "agree: full stop": (0.0, 1.0, 1.0),
        "agree: 'none' is zero": (0.0, 1.0, 1.0),
        "answers that differ only by whitespace agree (standard), not in mPLUG-Owl2's": (1.0, 1.0, 1.0),
        "disagree: case normalised on both sides": (1.0, 0.6, 1.0),
        "disagree: digits normalised (not in mPLUG-Owl2's answers)": (1.0, 0.6, 1.0),
        "only the first 32 full stops removed": (0.0, 0.0, 0.0),
        "capitalised contraction keys never match": (0.6, 0.6, 0.6),
        "reverse contraction somebody'd -> somebodyd": (1.0, 1.0, 1.0),  # without it: 0.6 each
        "three matches: full credit in 7 of 10 subsets": (0.9, 0.9, 0.9),
        "one match: a third in 9 of 10 subsets": (0.3, 0.3, 0.3),
    }
    for case, scores in expected.items():
        got = tuple(fn(*QUIRKS[case]) for fn, _ in VARIANTS)
        assert got == pytest.approx(scores, abs=1e-12), case
    # whitespace: the standard strips the answers first, so " yes" agrees and "Yes" would score 0
    assert vqa_accuracy("Yes", ["yes"] * 9 + [" yes"]) == 0.0
    assert vqa_mplug_owl2_accuracy("Yes", ["yes"] * 9 + [" yes"]) == 1.0


# The 12-question case: five questions score differently under the standard and the normalised rule.
TWELVE = [
    ("yes", ["yes"] * 10),
    ("Yes", ["yes"] * 10),  # differs
    ("two", ["2"] * 10),  # differs
    ("a dog", ["dog"] * 10),  # differs
    ("dont know", ["don't know"] * 10),  # differs
    ("no", ["yes"] * 10),
    ("2", ["2"] * 3 + ["3"] * 7),
    ("red.", ["red"] * 10),  # differs
    ("blue", ["blue"] * 6 + ["navy"] * 4),
    ("Two", ["2"] * 4 + ["3"] * 6),
    ("cat", ["dog"] * 10),
    ("  yes ", ["yes"] * 10),
]


def test_twelve_questions_standard_against_normalised():
    standard = [vqa_accuracy(p, a) for p, a in TWELVE]
    normalised = [vqa_normalized_accuracy(p, a) for p, a in TWELVE]
    assert [k for k, (s, n) in enumerate(zip(standard, normalised)) if s != n] == [1, 2, 3, 4, 7]
    assert standard == pytest.approx([StandardScript().score(p, a) for p, a in TWELVE], abs=1e-12)
    assert normalised == pytest.approx([NormalizedRule().score(p, a) for p, a in TWELVE], abs=1e-12)
    predictions = {str(k): p for k, (p, _) in enumerate(TWELVE)}
    references = {str(k): a for k, (_, a) in enumerate(TWELVE)}
    assert score(predictions, references, metric="vqa").overall == pytest.approx(4.9 / 12)
    assert score(predictions, references, metric="vqa_normalized").overall == pytest.approx(9.9 / 12)
    assert score(predictions, references, metric="vqa_mplug_owl2").overall == pytest.approx(9.9 / 12)


def test_tables_are_the_scripts():
    # sha256 of json.dumps(table, sort_keys=True) for the `contractions` literal of GT-Vision-Lab/VQA vqaEval.py at
    # a013f00 (read with ast.literal_eval); mPLUG-Owl2's vqa_eval.py has the same table
    digest = hashlib.sha256(json.dumps(production.CONTRACTIONS, sort_keys=True).encode()).hexdigest()
    assert digest == "52771f672b95913f862aae058e42219f9e1e4d7af64475a5cdf394301acf67a9"
    assert len(production.CONTRACTIONS) == 120 and {"Im", "Ive", "Id've", "I'dve"} <= set(production.CONTRACTIONS)
    assert production.NUMBER_WORDS == MANUAL_MAP
    assert list(production.ARTICLES) == ARTICLES
    assert list(production.PUNCTUATION) == PUNCT


def test_a_single_answer_is_exact_match_after_the_variants_processing():
    # the scripts would score 0 (no other annotator); each variant compares as it would with agreeing answers
    assert vqa_accuracy("dog", ["dog"]) == 1.0 and vqa_accuracy("A dog.", ["dog"]) == 0.0
    assert vqa_mplug_owl2_accuracy("A dog.", ["dog"]) == 1.0 and vqa_normalized_accuracy("A dog.", ["Dog"]) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("dog", [])


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("two", "2"),
        ("None", "0"),
        ("a dog.", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("im", "im"),  # the script's key is "Im": it never matches a lower-cased word
        ("yes, it is", "yes it is"),  # mark next to a space: removed
        ("black-white", "black white"),  # mark between words: a space
        ("1,000", "1000"),  # digit-comma-digit: every mark removed
        ("2.5", "2.5"),  # a decimal point stays
        ("red!\n", "red"),
        ("  top\tleft ", "top left"),
        ("(cat)", "cat"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_any_answer():
    assert exact_match("The cat", ["dog", "cat"]) == 1.0
    assert exact_match("cats", ["dog", "cat"]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        exact_match("x", [])
