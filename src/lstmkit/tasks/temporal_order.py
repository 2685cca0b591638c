"""The temporal order problems of Hochreiter & Schmidhuber (1997, Exp. 6a and 6b).

Symbols ``a b c d X Y E B`` (token ids 0-7). A sequence is L long, L uniform in [100, 110]; it
starts with E and ends with the trigger B. At a few relevant times one of X, Y appears; every
other symbol is uniform over ``a b c d``. The class is the order of the X/Y symbols::

    6a: t1 in [10, 20], t2 in [50, 60]                    4 classes (XX, XY, YX, YY)
    6b: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76]    8 classes

The answer is right when every output (softmax probability) is within 0.3 of the one-hot class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lstmkit.tasks.base import Batch, Classification, uniform_ints

SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")
X, E, TRIGGER = SYMBOLS.index("X"), SYMBOLS.index("E"), SYMBOLS.index("B")
MIN_LENGTH, MAX_LENGTH = 100, 110


@dataclass(frozen=True)
class TemporalOrder(Classification):
    """Exp. 6a (``windows`` of two relevant times) or 6b (three)."""

    windows: tuple[tuple[int, int], ...] = ((10, 20), (50, 60))
    name = "temporal-order-6a"
    vocab_size = len(SYMBOLS)
    PAPER = 31_390

    @property
    def output_size(self) -> int:
        return 2 ** len(self.windows)

    @property
    def lag(self) -> int:
        return MAX_LENGTH - self.windows[0][0]

    @property
    def paper(self):
        return self.PAPER

    def sample(self, n, generator):
        lengths = uniform_ints(MIN_LENGTH, MAX_LENGTH, n, generator)
        x = torch.randint(0, 4, (n, MAX_LENGTH), generator=generator)
        rows = torch.arange(n)
        x[:, 0] = E
        target = torch.zeros(n, dtype=torch.long)
        for low, high in self.windows:
            which = torch.randint(0, 2, (n,), generator=generator)  # 0: X, 1: Y
            x[rows, uniform_ints(low, high, n, generator)] = X + which
            target = 2 * target + which
        x[rows, lengths - 1] = TRIGGER
        x = x * (torch.arange(MAX_LENGTH)[None, :] < lengths[:, None])
        return Batch(x, target, lengths, n)


@dataclass(frozen=True)
class TemporalOrder3(TemporalOrder):
    """Exp. 6b: three relevant times, eight classes."""

    windows: tuple[tuple[int, int], ...] = ((10, 20), (33, 43), (66, 76))
    name = "temporal-order-6b"
    PAPER = 571_100
