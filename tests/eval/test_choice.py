"""Multiple-choice accuracy: how a reply's option letter is read, and the reference letter."""

from __future__ import annotations

import pytest

from owl2.eval import choice_accuracy, parse_choice, score
from owl2.eval.choice import reference_choice


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("B", "B"),
        ("b", "B"),  # a lone letter in either case
        ("(C)", "C"),
        ("D.", "D"),
        (" E) ", "E"),
        ("Answer: B", "B"),
        ("answer:(c)", None),  # after "answer" only capitals count, and a lone-letter reply it is not
        ("The answer is (C).", "C"),
        ("The correct answer is D because the dog is brown.", "D"),  # "answer" wins over the article "the"
        ("A dog is shown, so the answer is B", "B"),  # ... and over an earlier standalone "A"
        ("I pick (D), not A.", "D"),  # a bracketed letter wins over an earlier standalone one
        ("B. A red bus", "B"),
        ("C is correct", "C"),
        ("A dog", "A"),  # the article reads as option A
        ("I'd say E", "E"),  # "I" is no option, "I'd" no standalone letter
        ("Bus", None),
        ("F", None),  # beyond E
        ("", None),
        ("no idea", None),
    ],
)
def test_parse_choice(reply, letter):
    assert parse_choice(reply) == letter


def test_choice_accuracy_against_the_reference_letter():
    assert choice_accuracy("Answer: B", ["B"]) == 1.0
    assert choice_accuracy("(b)", ["(B)"]) == 1.0
    assert choice_accuracy("C", ["B"]) == 0.0
    assert choice_accuracy("no idea", ["A"]) == 0.0
    with pytest.raises(ValueError, match="reference 'a dog' is not an option letter"):
        choice_accuracy("A", ["a dog"])
    with pytest.raises(ValueError, match="needs a reference"):
        choice_accuracy("A", [])
    assert reference_choice(" c. ") == "C"


def test_choice_metric_per_type():
    predictions = {"1": "A", "2": "The answer is (B).", "3": "D", "4": "I am not sure"}
    references = {"1": ["A"], "2": ["B"], "3": ["C"], "4": ["D"]}
    scores = score(predictions, references, {"1": "mmbench", "2": "mmbench", "3": "seed", "4": "seed"}, metric="choice")
    assert scores.overall == 0.5 and scores.per_type == {"mmbench": 1.0, "seed": 0.0}
