import itertools
import math

import numpy as np
import pytest

from lstmkit.apps import ctc

ALPHABET = "ab"


def _frames(seed, steps=4, labels=3):
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((steps, labels))
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _exact_best(log_probs, allowed=None):
    """The labelling of highest total probability, summing every path (brute force)."""
    totals: dict[str, float] = {}
    for path in itertools.product(range(log_probs.shape[1]), repeat=len(log_probs)):
        text = ctc.collapse(path, ALPHABET)
        p = math.exp(sum(log_probs[t, k] for t, k in enumerate(path)))
        totals[text] = totals.get(text, 0.0) + p
    if allowed is not None:
        totals = {t: p for t, p in totals.items() if t in allowed}
    return max(totals, key=totals.get)


def test_collapse_merges_repeats_and_drops_blanks():
    assert ctc.collapse([0, 1, 1, 0, 1, 2, 2, 0], ALPHABET) == "aab"
    assert ctc.collapse([], ALPHABET) == ""


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_with_a_wide_beam_is_exact(seed):
    frames = _frames(seed)
    assert ctc.beam_search(frames, ALPHABET, beam=100, prune=-math.inf) == _exact_best(frames)


@pytest.mark.parametrize("seed", range(6))
def test_lexicon_keeps_only_its_words(seed):
    alphabet = " ab"
    frames = _frames(seed, steps=5, labels=4)
    lexicon = ["ab", "b"]
    got = ctc.beam_search(frames, alphabet, beam=200, lexicon=lexicon, lm_weight=0.0,
                          prune=-math.inf)
    totals: dict[str, float] = {}
    for path in itertools.product(range(4), repeat=5):
        text = ctc.collapse(path, alphabet)
        if text and all(w in lexicon for w in text.split(" ")):
            totals[text] = totals.get(text, 0.0) + math.exp(sum(frames[t, k]
                                                                 for t, k in enumerate(path)))
    assert got == max(totals, key=totals.get)


def test_bigram_prefers_seen_sequences():
    lm = ctc.Bigram(["one two", "one two", "two one"])
    assert lm.log_prob("one", "two") > lm.log_prob("one", "one")
    assert lm.log_prob("<s>", "one") > lm.log_prob("<s>", "two")
    words = {"<s>", "one", "two", "</s>"}
    assert sum(math.exp(lm.log_prob("one", w)) for w in words) == pytest.approx(1.0)


def test_greedy_is_the_best_path():
    frames = _frames(3, steps=6)
    best = frames.argmax(1)
    assert ctc.greedy(frames, ALPHABET) == ctc.collapse(best, ALPHABET)


def test_error_rates():
    pytest.importorskip("jiwer")
    rates = ctc.error_rates(["one two three", "four"], ["one too three", ""])
    assert rates["wer"] == pytest.approx(100 * 2 / 4)
    assert rates["cer"] == pytest.approx(100 * (1 + 4) / (13 + 4))
