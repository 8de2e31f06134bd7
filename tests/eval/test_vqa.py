"""The standard VQA answer normalisation and scores (cases from the official `vqa_eval.py` rules)."""

from __future__ import annotations

import pytest

from owl2.eval import exact_match, normalize_answer, score, vqa_accuracy


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


def test_vqa_accuracy_counts_three_matches_as_full_credit():
    ten = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("two", ten) == pytest.approx(1.0 * 7 / 10 + (2 / 3) * 3 / 10)
    assert vqa_accuracy("three", ten) == 1.0
    assert vqa_accuracy("four", ten) == 0.0
    assert vqa_accuracy("A dog.", ["dog"]) == 1.0  # one answer: exact match after normalisation
    assert vqa_accuracy("dogs", ["dog"]) == 0.0


def test_exact_match_any_answer():
    assert exact_match("The cat", ["dog", "cat"]) == 1.0
    assert exact_match("cats", ["dog", "cat"]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        exact_match("x", [])


def test_score_per_type_and_missing_prediction():
    refs = {"a": ["red"], "b": ["two"], "c": ["yes"], "d": ["no"]}
    types = {"a": "color", "b": "count", "c": "yesno", "d": "yesno"}
    preds = {"a": "Red.", "b": "2", "c": "yes", "d": "yes", "extra": "ignored"}
    scores = score(preds, refs, types, metric="exact")
    assert scores.overall == 0.75 and scores.count == 4
    assert scores.per_type == {"color": 1.0, "count": 1.0, "yesno": 0.5}
    table = scores.table("exact").splitlines()
    assert table[0].split() == ["type", "n", "exact"]
    assert table[-1].split() == ["overall", "4", "75.00%"]
    with pytest.raises(KeyError, match="'b'"):
        score({"a": "red"}, refs)
    with pytest.raises(KeyError, match="unknown metric"):
        score(preds, refs, metric="bleu")
