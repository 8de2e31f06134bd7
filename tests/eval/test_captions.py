"""Caption metrics against pycocoevalcap, and BLEU and ROUGE-L against restatements written here.

Reference values were computed by pycocoevalcap 1.2 (PyPI; `pip install --no-deps pycocoevalcap`) on these
inputs: each corpus as `gts = {i: refs}`, `res = {i: [prediction]}`, tokenized (CORPUS only) by its
`PTBTokenizer().tokenize` (stanford-corenlp 3.4.1, run by OpenJDK 17), then `Bleu(4).compute_score(gts, res)`,
`Cider().compute_score(gts, res)` and `Rouge().compute_score(gts, res)`, printed with `repr`. pycocoevalcap is
not a dependency; the values are hard-coded.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from owl2.eval import METRICS, bleu, cider_d, ptb_tokenize, rouge_l, score
from owl2.eval.captions import longest_common_subsequence

DATA = Path(__file__).parent / "data"

CORPUS = [
    ("A man riding a wave on top of a surfboard.",
     ["A surfer rides a large wave in the ocean.", "A man on a surfboard riding a wave.",
      "A person surfing on a big wave.", "A surfer in a black wetsuit riding a wave.",
      "Man riding a wave on a surfboard in the ocean."]),
    ("Two dogs playing with a frisbee in the park.",
     ["Two dogs are playing with a frisbee on the grass.", "A pair of dogs fight over a frisbee.",
      "Two brown dogs playing in a park.", "Dogs playing with a red frisbee in a field."]),
    ("A kitchen with a stove and a refrigerator.",
     ["A kitchen with a stove, a sink, and a refrigerator.", "A small kitchen with white appliances.",
      "A clean kitchen with a fridge and an oven.", "The kitchen has a stove and a white refrigerator.",
      "A kitchen area with a stove top oven."]),
    ("A cat sleeping on a laptop.",
     ["A cat laying on top of a laptop computer.", "A cat is sleeping on the keyboard of a laptop.",
      "A grey cat rests on an open laptop.", "A kitty curled up on a laptop."]),
    ("A plate of food with broccoli and rice.",
     ["A plate of food with broccoli, carrots and rice.", "A white plate topped with rice and vegetables.",
      "Rice and broccoli on a dinner plate.", "A meal of chicken, rice and broccoli."]),
    ("A red bus driving down the street.",
     ["A red double-decker bus driving down a city street.", "A bus that is driving down the street.",
      "A red bus on a road next to buildings.", "The bus is red and driving on the street."]),
    ("A giraffe standing in a field.",
     ["Two giraffes standing next to each other in a field.", "A giraffe standing in the grass near trees.",
      "A tall giraffe in a grassy field.", "A giraffe is standing alone in a field."]),
    ("A clock on a tower.",
     ["The clock on the tower says it's 12:15.", "A large clock tower against a blue sky.",
      "A clock on the side of a brick tower.", "A tall tower with a clock on it."]),
    ("A man holding a tennis racket on a court.",
     ["A tennis player is getting ready to hit the ball.", "A man holding a tennis racquet on a tennis court.",
      "A man swinging a tennis racket at a ball.", "A tennis player on the court with his racket."]),
    ("a woman isn't holding an umbrella",
     ["A woman holding an umbrella in the rain.", "A woman walks with an umbrella.",
      "A lady with an umbrella on a rainy day.", "A woman isn't using her umbrella."]),
]  # fmt: skip
"""Raw captions: a prediction and its references per image."""

CORPUS_BLEU = [0.8984999104590321, 0.8223723430608042, 0.7134993376213121, 0.5782011849707732]
CORPUS_CIDER = 2.684577528693945
CORPUS_ROUGE_L = 0.781325763046281
SUBSET = [0, 3, 9]  # the same images scored alone: CIDEr's idf changes with the corpus
SUBSET_BLEU = [0.874196553377722, 0.7923079109350553, 0.6278437539891661, 0.4746969006010139]
SUBSET_CIDER = 2.291851517683374
SUBSET_ROUGE_L = 0.7106442577030813

EDGE = [
    ("a dog", ["a dog runs on the grass", "the dog is running"]),  # brevity penalty
    ("", ["a cat"]),  # empty prediction
    ("the the the the", ["the cat is on the mat", "there is a cat on the mat"]),  # clipped counts
    ("a cat on the mat", ["the cat is on the mat", "there is a cat on the mat"]),
]
"""Already tokenized."""

EDGE_BLEU = [0.43299273387586085, 0.37843884206220485, 0.3569366539898514, 0.35590020844308334]
EDGE_CIDER = 1.9378650231910108  # per image: 1.886226027773645, 0.0, 0.4002357579223542, 5.464998307068044
EDGE_ROUGE_L = 0.4134352833869248  # per image: 0.45864661654135336, 0.0, 0.3860759493670886, 0.8090185676392573

PTB_CASES = [json.loads(line) for line in (DATA / "ptb_tokenizer.jsonl").read_text(encoding="utf-8").splitlines()]
"""Captions and what pycocoevalcap 1.2's PTBTokenizer (Java) made of them, punctuation removed; `differs` marks
the known differences that `owl2.eval.ptb` documents."""


def raw(indices=None):
    rows = [CORPUS[k] for k in (indices if indices is not None else range(len(CORPUS)))]
    return [p for p, _ in rows], [refs for _, refs in rows]


@pytest.mark.parametrize("case", [c for c in PTB_CASES if "differs" not in c], ids=lambda c: c["caption"][:40])
def test_tokenizer_matches_java_ptb_tokenizer(case):
    assert ptb_tokenize(case["caption"]) == case["java"]


def test_the_documented_differences_are_the_only_ones():
    differing = [c for c in PTB_CASES if "differs" in c]
    assert len(PTB_CASES) == 242 and len(differing) == 9
    assert all(ptb_tokenize(c["caption"]) != c["java"] for c in differing)


@pytest.mark.parametrize("indices, bleus, cider, rouge", [
    (None, CORPUS_BLEU, CORPUS_CIDER, CORPUS_ROUGE_L),
    (SUBSET, SUBSET_BLEU, SUBSET_CIDER, SUBSET_ROUGE_L),
])  # fmt: skip
def test_metrics_on_raw_captions_equal_pycocoevalcap(indices, bleus, cider, rouge):
    predictions, references = raw(indices)
    for n, expected in zip((1, 2, 3), bleus):
        assert METRICS[f"bleu{n}"].corpus(predictions, references) == pytest.approx(expected, rel=1e-12)
    assert METRICS["bleu"].corpus(predictions, references) == pytest.approx(bleus[3], rel=1e-12)
    assert METRICS["cider"].corpus(predictions, references) == pytest.approx(cider, rel=1e-12)
    assert METRICS["rouge_l"].corpus(predictions, references) == pytest.approx(rouge, rel=1e-12)


def test_scorers_on_tokenized_edge_cases_equal_pycocoevalcap():
    predictions, references = [p for p, _ in EDGE], [r for _, r in EDGE]
    assert bleu(predictions, references) == pytest.approx(EDGE_BLEU, rel=1e-12)
    assert cider_d(predictions, references) == pytest.approx(EDGE_CIDER, rel=1e-12)
    assert rouge_l(predictions, references) == pytest.approx(EDGE_ROUGE_L, rel=1e-12)


def test_cider_of_one_image_is_zero_and_groups_are_scored_alone():
    assert cider_d(["a cat on the mat"], [["the cat is on the mat"]]) == 0.0  # every idf is log(1) - log(1)
    predictions, references = raw()
    ids = [str(k) for k in range(len(CORPUS))]
    types = {qid: "subset" if int(qid) in SUBSET else "rest" for qid in ids}
    scores = score(dict(zip(ids, predictions)), dict(zip(ids, references)), types, metric="cider")
    assert scores.overall == pytest.approx(CORPUS_CIDER, rel=1e-12)
    assert scores.per_type["subset"] == pytest.approx(SUBSET_CIDER, rel=1e-12)
    assert not scores.percent and scores.table("cider").splitlines()[-1].split() == ["overall", "10", "268.46"]


@pytest.mark.parametrize("fn", [bleu, cider_d, rouge_l])
def test_scorers_reject_a_corpus_without_pairs(fn):
    with pytest.raises(ValueError, match="2 predictions but 1 reference sets"):
        fn(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="caption 0 has no reference"):
        fn(["a"], [[]])


# ---------------------------------------------------------------------------------------------------------------
# Restatements: BLEU from Papineni et al. with pycocoevalcap's choices, ROUGE-L from Lin (2004) with its beta


def bleu_restated(predictions, references, n=4):
    """Corpus BLEU: clipped n-gram precisions, their running geometric mean, one brevity penalty; the reference
    length of a caption is the closest (the shorter on a tie); pycocoevalcap's 1e-15 / 1e-9 smoothing."""

    def grams(words, k):
        return Counter(tuple(words[i : i + k]) for i in range(len(words) - k + 1))

    matched, total = Counter(), Counter()
    candidate_length = reference_length = 0
    for prediction, refs in zip(predictions, references):
        words = prediction.split()
        candidate_length += len(words)
        reference_length += sorted((abs(len(r.split()) - len(words)), len(r.split())) for r in refs)[0][1]
        for k in range(1, n + 1):
            most = Counter()
            for ref in refs:
                most |= grams(ref.split(), k)
            matched[k] += sum((grams(words, k) & most).values())
            total[k] += max(0, len(words) - k + 1)
    ratio = (candidate_length + 1e-15) / (reference_length + 1e-9)
    penalty = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    return [
        penalty * math.prod((matched[j] + 1e-15) / (total[j] + 1e-9) for j in range(1, k + 1)) ** (1 / k)
        for k in range(1, n + 1)
    ]


def rouge_l_restated(predictions, references, beta=1.2):
    """Mean over captions of the LCS F-measure from the best precision and the best recall (tokens split on ' ')."""

    def lcs(a, b):
        @lru_cache(maxsize=None)
        def length(i, j):
            if i == len(a) or j == len(b):
                return 0
            return length(i + 1, j + 1) + 1 if a[i] == b[j] else max(length(i + 1, j), length(i, j + 1))

        return length(0, 0)

    scores = []
    for prediction, refs in zip(predictions, references):
        c = tuple(prediction.split(" "))
        p = max(lcs(c, tuple(r.split(" "))) / len(c) for r in refs)
        r = max(lcs(c, tuple(ref.split(" "))) / len(ref.split(" ")) for ref in refs)
        scores.append(0.0 if p == 0 or r == 0 else (1 + beta**2) * p * r / (r + beta**2 * p))
    return sum(scores) / len(scores)


def random_corpus(seed, images=30):
    rng = random.Random(seed)
    vocab = "a the man dog cat on in with red blue is of street table two".split()

    def caption():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))

    return [caption() for _ in range(images)], [[caption() for _ in range(rng.randint(1, 5))] for _ in range(images)]


def corpora():
    tokenized = ([ptb_tokenize(p) for p, _ in CORPUS], [[ptb_tokenize(r) for r in refs] for _, refs in CORPUS])
    return [tokenized, ([p for p, _ in EDGE], [r for _, r in EDGE])] + [random_corpus(seed) for seed in range(5)]


@pytest.mark.parametrize("k", range(7))
def test_bleu_and_rouge_l_equal_their_restatements(k):
    predictions, references = corpora()[k]
    assert bleu(predictions, references) == pytest.approx(bleu_restated(predictions, references), rel=1e-9)
    assert rouge_l(predictions, references) == pytest.approx(rouge_l_restated(predictions, references), rel=1e-12)


def test_longest_common_subsequence():
    assert longest_common_subsequence("a b c d e".split(), "x b d y e".split()) == 3
    assert longest_common_subsequence([], ["a"]) == 0
