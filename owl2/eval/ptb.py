"""The caption tokenizer of the COCO caption evaluation, in Python (pycocoevalcap
`tokenizer/ptbtokenizer.py`: Stanford CoreNLP 3.4.1's Java `PTBTokenizer -preserveLines -lowerCase`,
then its punctuation removal).

Every caption metric of `owl2.eval.captions` scores text tokenized this way, references and
predictions alike, as `COCOEvalCap.evaluate` does before its scorers run. The Java tokenizer is a
lexer with several hundred rules; this module reproduces what it does to ordinary English captions:

- lower-case; punctuation split from words, and `. , ; : ! ? ' " -- ... -` then dropped, as the
  release drops its `PUNCTUATIONS` ("A dog, running." -> "a dog running");
- clitics split: "it's" -> "it 's", "isn't" -> "is n't", "can't" -> "ca n't", "I'd've" -> "i 'd 've",
  "cannot" -> "can not", "gonna" -> "gon na";
- brackets become `-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-` and, as the release compares its upper-case
  list after lower-casing, they are kept (a quirk every published COCO score shares);
- kept whole: hyphenated and slashed words ("black-and-white", "24/7"), numbers ("1,000", "3.5",
  "3:30"), abbreviations ("mr.", "st.", "etc.", "u.s.", "a.m."; "no." before a number), "o'clock";
  a run of several `!`/`?` ("!!!", "?!") is one token, and not in the release's list, so it stays.
- curly quotes and apostrophes, the ellipsis character and en/em dashes count as their ASCII forms.

Known differences from the Java tokenizer, all rare in captions (checked against it on the cases in
`tests/eval/data/ptb_tokenizer.jsonl`): a time glued to its unit ("2:30pm": Java splits "pm"),
punctuation between letters without spaces ("hi!hello", "a?b": Java keeps one token), emoticons
(":)"), currency other than `$` (Java writes "£" as "#" and "€" as "$"), a clitic on a hyphenated word,
the text "a." alone, SGML/XML markup and its escapes, and the Java lexer's abbreviation lists
beyond the common ones below.
"""

from __future__ import annotations

import re

PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...",
                ";")  # fmt: skip
"""Tokens pycocoevalcap removes after tokenizing, verbatim: the bracket names are compared with
lower-cased text, so they never match."""

ABBREVIATIONS = (
    "mr", "mrs", "ms", "dr", "drs", "prof", "gen", "rev", "sgt", "capt", "lt", "col", "st", "mt", "ave",
    "blvd", "rd", "jr", "sr", "co", "corp", "inc", "ltd", "dept", "etc", "vs", "al", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
)  # fmt: skip
"""Words that keep their full stop (any case); a sample of the Java lexer's lists (titles, companies,
months, `etc`), checked against it."""

BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
"""Penn Treebank names of brackets."""

_UNICODE = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
                          "\u2013": "--", "\u2014": "--"})  # fmt: skip

# One alternative per kind of token, tried in order at each position (the first that matches wins).
_TOKEN = re.compile(
    "|".join(
        (
            r"(?P<space>\s+)",
            r"(?P<url>(?:https?://|www\.)[^\s\"'()\[\]{}<>]*[^\s\"'()\[\]{}<>.,;:!?])",
            r"(?P<email>[\w.+-]+@\w[\w-]*(?:\.[\w-]+)+)",
            # first halves of words the lexer splits in two: "can|not", "gon|na", "'t|is"
            r"(?P<split>(?i:can(?=not\b)|gon(?=na\b)|got(?=ta\b)|wan(?=na\b)|lem(?=me\b)|gim(?=me\b)"
            r"|'t(?=(?:is|was)\b)|y'(?=all\b)))",
            r"(?P<whole>(?i:o'clock|ma'am|d'ye|'em\b|'n'|'\d\ds\b))",
            r"(?P<negated>(?i:[^\W_]+?(?=n't\b)))",  # "is|n't", "ca|n't", "wo|n't"
            r"(?P<clitic>(?i:n't\b|'(?:s|re|ve|m|ll|d)\b))",
            rf"(?P<abbreviation>(?<![\w.-])(?i:{'|'.join(ABBREVIATIONS)})\.|(?<![\w.-])(?i:no)\.(?=\s*\d)"
            r"|(?<![\w.-])[A-Za-z](?:\.[A-Za-z])*\.(?!\w))",
            r"(?P<word>(?:[-+](?=\d)|\.(?=\d)|[#@](?=\w))?\w+(?:(?:[-./]|(?<=[A-Z])&(?=[A-Z])|(?<=\d)[,:](?=\d))\w+)*)",
            r"(?P<ellipsis>\.{2,})",
            r"(?P<dashes>-{2,})",
            r"(?P<marks>[!?]+)",
            r"(?P<quote>[\"`']+)",
            r"(?P<other>.)",
        )
    ),
    re.DOTALL,
)


def ptb_tokenize(text: str) -> str:
    """Tokenize one caption as pycocoevalcap's `PTBTokenizer.tokenize` does, punctuation removed.

    Example:
        >>> ptb_tokenize("A man's dog, (barely) running on the U.S. beach.")
        "a man 's dog -lrb- barely -rrb- running on the u.s. beach"

    Args:
        text: The caption, as written.

    Returns:
        Lower-cased tokens joined by single spaces ("" for a caption of punctuation only).
    """
    text = text.replace("\n", " ").translate(_UNICODE)
    tokens = []
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind == "space":
            continue
        if kind == "ellipsis":
            token = "..."
        elif kind == "dashes":
            token = "--"
        elif kind == "quote":
            token = "''" if '"' in token else "'"
        elif token in BRACKETS:
            token = BRACKETS[token]
        tokens.append(token.lower())
    return " ".join(token for token in tokens if token not in PUNCTUATIONS)
