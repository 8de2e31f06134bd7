"""Caption metrics as the COCO caption evaluation computes them (pycocoevalcap 1.2: `bleu/bleu_scorer.py`,
`cider/cider_scorer.py`, `rouge/rouge.py`), on captions already tokenized by `owl2.eval.ptb`.

Each function takes a corpus: one predicted caption per image and that image's reference captions,
as lower-cased tokens joined by spaces. pycocoevalcap's `COCOEvalCap` tokenizes both sides with its
PTB tokenizer first; `owl2.eval.scoring` does the same with `ptb_tokenize`. METEOR and SPICE, which
pycocoevalcap runs in Java, are not here.

- BLEU-1..4 (`bleu`): corpus-level, as `Bleu(4).compute_score`: clipped n-gram counts and lengths
  summed over the corpus, the reference length of each caption the closest to it (the shorter on a
  tie), one brevity penalty for the corpus, and the scorer's smoothing constants (1e-15, 1e-9).
- CIDEr-D (`cider_d`, pycocoevalcap's `Cider`): n-grams of 1 to 4 weighted by tf-idf, the document
  frequencies counted over the corpus's reference sets, a candidate's counts clipped to the
  reference's, a Gaussian length penalty (sigma 6, on the number of bigrams, as the scorer counts
  length), the cosine averaged over n and over references, times 10. Being tf-idf, it depends on the
  whole corpus: one image alone scores 0, and a subset scored on its own gets its own idf.
- ROUGE-L (`rouge_l`): per caption, the longest common subsequence with each reference, the best
  precision and the best recall over the references (possibly from different ones), their F-measure
  with beta 1.2; averaged over the corpus.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

NGram = tuple[str, ...]


def ngram_counts(caption: str, n: int = 4) -> dict[NGram, int]:
    """Counts of every 1..n-gram of a tokenized caption, in the scorers' order (by length, then position)."""
    words = caption.split()
    counts: dict[NGram, int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def _check_corpus(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference sets; expected one each")
    for k, refs in enumerate(references):
        if not refs:
            raise ValueError(f"caption {k} has no reference; expected at least one")


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap's `Bleu(n).compute_score` (its `BleuScorer`, option "closest").

    Args:
        predictions: One tokenized caption per image.
        references: The tokenized reference captions of each image.
        n: The longest n-gram.

    Returns:
        `[BLEU-1, ..., BLEU-n]`, each in [0, 1].

    Raises:
        ValueError: If the lengths differ or an image has no reference.
    """
    _check_corpus(predictions, references)
    tiny, small = 1e-15, 1e-9  # the scorer's: a zero count gives ~0, never a division by zero
    guess, correct = [0] * n, [0] * n
    test_length = reference_length = 0
    for prediction, refs in zip(predictions, references):
        counts = ngram_counts(prediction, n)
        length = len(prediction.split())
        max_ref_counts: dict[NGram, int] = {}
        for ref in refs:
            for ngram, count in ngram_counts(ref, n).items():
                max_ref_counts[ngram] = max(max_ref_counts.get(ngram, 0), count)
        test_length += length
        reference_length += min((abs(len(ref.split()) - length), len(ref.split())) for ref in refs)[1]
        for k in range(n):
            guess[k] += max(0, length - k)
        for ngram, count in counts.items():
            correct[len(ngram) - 1] += min(max_ref_counts.get(ngram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1 / (k + 1)))
    ratio = (test_length + tiny) / (reference_length + small)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D as pycocoevalcap's `Cider().compute_score` (its `CiderScorer`).

    Args:
        predictions: One tokenized caption per image.
        references: The tokenized reference captions of each image.
        n: The longest n-gram.
        sigma: Width of the Gaussian length penalty.

    Returns:
        The mean over images (0 for a single image: every n-gram has idf 0).

    Raises:
        ValueError: If the lengths differ or an image has no reference.
    """
    _check_corpus(predictions, references)
    reference_counts = [[ngram_counts(ref, n) for ref in refs] for refs in references]
    document_frequency: dict[NGram, int] = defaultdict(int)
    for refs in reference_counts:
        for ngram in {ngram for counts in refs for ngram in counts}:
            document_frequency[ngram] += 1
    log_corpus = math.log(len(references))

    def tfidf(counts: dict[NGram, int]) -> tuple[list[dict[NGram, float]], list[float], int]:
        """Weights by n-gram length, their norms, and the caption's length (its number of bigrams)."""
        weights: list[dict[NGram, float]] = [{} for _ in range(n)]
        squares = [0.0] * n
        for ngram, count in counts.items():
            weight = count * (log_corpus - math.log(max(1.0, document_frequency.get(ngram, 0))))
            weights[len(ngram) - 1][ngram] = weight
            squares[len(ngram) - 1] += weight**2
        bigrams = sum(count for ngram, count in counts.items() if len(ngram) == 2)
        return weights, [math.sqrt(s) for s in squares], bigrams

    scores = []
    for prediction, refs in zip(predictions, reference_counts):
        weights, norms, length = tfidf(ngram_counts(prediction, n))
        total = [0.0] * n
        for ref in refs:
            ref_weights, ref_norms, ref_length = tfidf(ref)
            penalty = math.e ** (-((length - ref_length) ** 2) / (2 * sigma**2))
            for k in range(n):
                ref_k = ref_weights[k]
                # clipped: a candidate's weight counts at most the reference's
                value = sum(min(w, ref_k.get(g, 0.0)) * ref_k.get(g, 0.0) for g, w in weights[k].items())
                if norms[k] != 0 and ref_norms[k] != 0:
                    value /= norms[k] * ref_norms[k]
                total[k] += value * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores)


def longest_common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_caption(prediction: str, references: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L of one tokenized caption as pycocoevalcap's `Rouge.calc_score`.

    Tokens are split on single spaces, as the scorer does (so "" is one empty token).
    """
    candidate = prediction.split(" ")
    lengths = [(longest_common_subsequence(ref.split(" "), candidate), len(ref.split(" "))) for ref in references]
    precision = max(lcs / len(candidate) for lcs, _ in lengths)
    recall = max(lcs / ref_length for lcs, ref_length in lengths)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Corpus ROUGE-L as pycocoevalcap's `Rouge().compute_score`: the mean of `rouge_l_caption`.

    Raises:
        ValueError: If the lengths differ or an image has no reference.
    """
    _check_corpus(predictions, references)
    scores = [rouge_l_caption(p, refs, beta) for p, refs in zip(predictions, references)]
    return sum(scores) / len(scores)
