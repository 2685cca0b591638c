"""Very long time lags without local regularities (Hochreiter & Schmidhuber 1997, Exp. 2c).

Symbols: p distractors ``a_1 .. a_p`` (ids 0..p-1), then ``e`` (the trigger), ``b``, ``x``,
``y``. A sequence is ``b``, one of ``x``/``y``, q distractors, then more distractors, each step
continuing with probability 0.9 (k of them, k geometric with mean 9), then ``e``; every distractor
is uniform over the p. At ``e`` the network must say which of ``x``/``y`` came second, across
q + k + 1 steps of noise with no local regularity to lean on. Right when both outputs (softmax
probabilities) are within 0.2 of the one-hot answer; the paper tested on 10,000 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lstmkit.tasks.base import Batch, Classification

CONTINUE = 0.9
"""Probability of one more distractor after the first q."""


@dataclass(frozen=True)
class LongLag(Classification):
    """Exp. 2c with q = ``length`` forced distractors drawn from p = ``distractors`` symbols."""

    length: int = 100
    distractors: int = 100
    name = "long-lag-2c"
    output_size = 2
    threshold = 0.2
    test_size = 10_000
    PAPER = {(100, 100): 31_000, (1000, 1000): 49_000}
    """Table 3 of the paper, the two ends of its q = p rows."""

    def __post_init__(self):
        for name in ("length", "distractors"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")

    @property
    def vocab_size(self) -> int:
        return self.distractors + 4

    @property
    def lag(self) -> int:
        return self.length + 2 + round(CONTINUE / (1 - CONTINUE))

    @property
    def paper(self):
        return self.PAPER.get((self.length, self.distractors))

    def describe(self) -> str:
        return f"{self.name} q={self.length} p={self.distractors}"

    def sample(self, n, generator):
        p, q = self.distractors, self.length
        trigger, begin, x_symbol = p, p + 1, p + 2
        # k + 1 ~ Geometric(0.1): the number of tries until the trigger comes.
        k = torch.empty(n).geometric_(1 - CONTINUE, generator=generator).long() - 1
        lengths = q + k + 3  # b, x|y, q + k distractors, e
        steps = int(lengths.max())
        x = torch.randint(0, p, (n, steps), generator=generator)
        which = torch.randint(0, 2, (n,), generator=generator)
        rows = torch.arange(n)
        x[:, 0] = begin
        x[:, 1] = x_symbol + which
        x[rows, lengths - 1] = trigger
        x = x * (torch.arange(steps)[None, :] < lengths[:, None])
        return Batch(x, which, lengths, n)
