"""CTC decoding and error rates.

Label 0 is the blank; label k + 1 is ``alphabet[k]``. Greedy decoding takes the likeliest label
of every frame, merges repeats and drops blanks. Beam search keeps the ``beam`` likeliest label
prefixes (the CTC prefix beam search of Hannun et al. 2014), summing the probability of every
alignment of a prefix; with a lexicon a word may only grow into a lexicon word, and with a
bigram word model each finished word adds ``lm_weight * log P(word | previous word)``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from lstmkit._optional import require

NEG = -math.inf


def encode(text: str, alphabet: str) -> list[int]:
    return [alphabet.index(c) + 1 for c in text]


def collapse(labels, alphabet: str) -> str:
    """Labels of consecutive frames -> text: repeats merged, blanks dropped."""
    out, previous = [], 0
    for label in labels:
        label = int(label)
        if label != previous and label:
            out.append(alphabet[label - 1])
        previous = label
    return "".join(out)


def greedy(log_probs: np.ndarray, alphabet: str) -> str:
    """Best path of (T, V) frame log-probabilities, as text."""
    return " ".join(collapse(log_probs.argmax(-1), alphabet).split())


class Bigram:
    """A word bigram model with add-one smoothing, ``<s>`` starting and ``</s>`` ending each
    transcript."""

    def __init__(self, texts: list[str]):
        self.pairs: Counter = Counter()
        self.firsts: Counter = Counter()
        for text in texts:
            words = ["<s>"] + text.split() + ["</s>"]
            self.firsts.update(words[:-1])
            self.pairs.update(zip(words[:-1], words[1:]))
        self.size = len({w for pair in self.pairs for w in pair})

    def log_prob(self, previous: str, word: str) -> float:
        return math.log((self.pairs[previous, word] + 1) / (self.firsts[previous] + self.size))


def _lae(a: float, b: float) -> float:
    if a == NEG:
        return b
    if b == NEG:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class _Constraint:
    """The lexicon and language-model score of growing a prefix by one character."""

    def __init__(self, lexicon, lm: Bigram | None, lm_weight: float):
        self.words = set(lexicon) if lexicon else None
        self.stems = {w[:k] for w in self.words for k in range(len(w) + 1)} if self.words else None
        self.lm, self.lm_weight = lm, lm_weight

    def score(self, prefix: str, char: str) -> float:
        """log-weight of ``prefix + char``; NEG forbids it."""
        words = prefix.split(" ")
        if char != " ":
            return 0.0 if self.stems is None or words[-1] + char in self.stems else NEG
        if not words[-1]:  # no leading or double spaces
            return NEG
        return self._word(words)

    def finish(self, prefix: str) -> float:
        """log-weight of ending the transcript after ``prefix``."""
        words = prefix.split(" ") if prefix else [""]
        if not words[-1]:
            return 0.0 if prefix == "" else NEG
        return self._word(words) + self._lm(words[-1], "</s>")

    def _word(self, words: list[str]) -> float:
        if self.words is not None and words[-1] not in self.words:
            return NEG
        return self._lm(words[-2] if len(words) > 1 else "<s>", words[-1])

    def _lm(self, previous: str, word: str) -> float:
        return self.lm_weight * self.lm.log_prob(previous, word) if self.lm else 0.0


def beam_search(log_probs: np.ndarray, alphabet: str, beam: int = 8, lexicon=None,
                lm: Bigram | None = None, lm_weight: float = 0.5,
                prune: float = -12.0) -> str:
    """The likeliest transcript of (T, V) frame log-probabilities under the constraints.

    Characters less likely than ``prune`` (log-probability) in a frame are not tried there.
    """
    constraint = _Constraint(lexicon, lm, lm_weight)
    beams = {"": (0.0, NEG)}  # prefix -> (log P ending in blank, log P ending in a label)
    for frame in log_probs:
        grown: defaultdict = defaultdict(lambda: [NEG, NEG])
        candidates = [k for k in np.flatnonzero(frame > prune) if k]
        for prefix, (blank, label) in beams.items():
            total = _lae(blank, label)
            entry = grown[prefix]
            entry[0] = _lae(entry[0], total + frame[0])
            last = prefix[-1] if prefix else None
            for k in candidates:
                char = alphabet[k - 1]
                if char == last:  # a repeat merges unless a blank came between
                    entry[1] = _lae(entry[1], label + frame[k])
                    source = blank
                else:
                    source = total
                bonus = constraint.score(prefix, char)
                if bonus == NEG or source == NEG:
                    continue
                new = grown[prefix + char]
                new[1] = _lae(new[1], source + frame[k] + bonus)
        ranked = sorted(grown.items(), key=lambda item: -_lae(*item[1]))
        beams = {p: tuple(s) for p, s in ranked[:beam]}
    finals = [(_lae(*s) + constraint.finish(p), p) for p, s in beams.items()]
    score, best = max(finals)
    if score == NEG:  # no prefix ends in a lexicon word: fall back to the likeliest path
        return greedy(log_probs, alphabet)
    return best


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Word and character error rates in percent (jiwer), over all utterances together."""
    jiwer = require("jiwer", "speech", "word error rates")
    hypotheses = [h if h else "" for h in hypotheses]
    return {"wer": 100 * float(jiwer.wer(references, hypotheses)),
            "cer": 100 * float(jiwer.cer(references, hypotheses))}
