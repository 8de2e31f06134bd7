"""Multiple-choice accuracy: the option letter a reply names, against the reference letter (as
mPLUG-Owl2's `evaluate_mmbench.py` prompts for it: "Answer with the option's letter from the given
choices directly").

A reply is read by the first rule that applies:

1. the whole reply is one letter, in either case, with only punctuation or brackets around it:
   "B", "b", "(B)", "B.", " C) ";
2. the word "answer" (any case), an optional "is" and an optional colon, then a capital letter, bare
   or in brackets: "Answer: B", "The answer is (C).";
3. the first capital letter in brackets: "I pick (D) because ...";
4. the first capital letter standing alone (no letter, digit or apostrophe touching it): "B. cat",
   "C is correct".

Only the options A to E count. Rule 4 cannot tell option A from the article: "A dog" reads as A, so
prompt for the letter alone. A reply that names no option scores 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OPTIONS = "ABCDE"
"""The option letters."""

_ALONE = re.compile(rf"^[\W_]*([{OPTIONS}{OPTIONS.lower()}])[\W_]*$")
_AFTER_ANSWER = re.compile(rf"(?i:answer)\s*(?:is\s*)?:?\s*\(?([{OPTIONS}])(?![A-Za-z0-9'])")
_BRACKETED = re.compile(rf"\(([{OPTIONS}])\)")
_STANDALONE = re.compile(rf"(?<![A-Za-z0-9'])([{OPTIONS}])(?![A-Za-z0-9'])")


def parse_choice(text: str) -> str | None:
    """The option letter a reply names, by the rules of this module's docstring.

    Example:
        >>> [parse_choice(t) for t in ["(b)", "Answer: C", "I pick (D).", "E. a bird", "no idea"]]
        ['B', 'C', 'D', 'E', None]

    Returns:
        A capital letter of `OPTIONS`, or None.
    """
    match = _ALONE.match(text)
    if match is not None:
        return match.group(1).upper()
    for pattern in (_AFTER_ANSWER, _BRACKETED, _STANDALONE):
        match = pattern.search(text)
        if match is not None:
            return match.group(1)
    return None


def reference_choice(text: str) -> str:
    """The option letter of a reference answer ("B", "(B)", "b.").

    Raises:
        ValueError: If the reference is not a single option letter.
    """
    match = _ALONE.match(text)
    if match is None:
        raise ValueError(f"reference {text!r} is not an option letter; expected one of {', '.join(OPTIONS)}")
    return match.group(1).upper()


def choice_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the reply names the reference option (any of them, if several), else 0.0.

    Raises:
        ValueError: If `answers` is empty or one is not an option letter.
    """
    if not answers:
        raise ValueError("choice accuracy needs a reference option letter")
    references = {reference_choice(answer) for answer in answers}
    return float(parse_choice(prediction) in references)
