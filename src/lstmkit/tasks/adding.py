"""The adding and multiplication problems of Hochreiter & Schmidhuber (1997, Exp. 4 and 5).

Each step is a pair (value, marker). A sequence is L long, L uniform in [T, T + T/10]. The first
and the last pair carry marker -1. One of the first 10 pairs is marked 1 (its value is X1) and so
is one of the first T/2 - 1 pairs not marked yet (X2); the network answers at the last step::

    adding:          values ~ U[-1, 1], target 0.5 + (X1 + X2) / 4, X1 := 0 if it is pair 0
    multiplication:  values ~ U[0, 1],  target X1 * X2,             X1 := 1 if it is pair 0

The answer is right when its absolute error is below 0.04. On adding the constant predictor 0.5
has MSE Var(X1 + X2) / 16 = (0.9 / 3 + 1 / 3) / 16 = 0.0396 (0.0417 = 1/24 if X1 were never set to
0): learning anything at all means remembering two values across at least T/2 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lstmkit.tasks.base import Batch, Regression, uniform_ints

FIRST_MARK_WINDOW = 10
"""X1 is one of the first this many pairs."""


def marked_positions(length: int, n: int, generator: torch.Generator):
    """(i1, i2), each (n,): X1 among pairs 0..9, X2 the r-th of the pairs that are still unmarked
    (pair 0 carries -1 so it is not one), r uniform below T/2 - 1."""
    i1 = torch.randint(0, FIRST_MARK_WINDOW, (n,), generator=generator)
    r = torch.randint(0, length // 2 - 1, (n,), generator=generator)
    i2 = 1 + r
    i2 = i2 + ((i2 >= i1) & (i1 >= 1)).long()  # skip over X1's pair
    return i1, i2


@dataclass(frozen=True)
class Adding1997(Regression):
    """The 1997 adding problem at minimum length ``length`` (T)."""

    length: int = 100
    name = "adding"
    input_size = 2
    baseline = (0.9 / 3 + 1 / 3) / 16
    PAPER = {100: 74_000, 500: 209_000, 1000: 853_000}
    low, high = -1.0, 1.0
    first_value = 0.0
    """What X1 becomes when pair 0 is marked."""

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 2 * FIRST_MARK_WINDOW:
            raise ValueError(f"length: expected an int >= {2 * FIRST_MARK_WINDOW}, "
                             f"got {self.length!r}")

    @property
    def lag(self) -> int:
        return self.length + self.length // 10

    @property
    def paper(self):
        return self.PAPER.get(self.length)

    def describe(self) -> str:
        return f"{self.name} T={self.length}"

    def sample(self, n, generator):
        t = self.length
        lengths = uniform_ints(t, t + t // 10, n, generator)
        steps = int(lengths.max())
        values = torch.empty(n, steps).uniform_(self.low, self.high, generator=generator)
        i1, i2 = marked_positions(t, n, generator)
        rows = torch.arange(n)
        values[rows, i1] = torch.where(i1 == 0, torch.tensor(self.first_value), values[rows, i1])
        markers = torch.zeros(n, steps)
        markers[:, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        markers[rows, i1] = 1.0
        markers[rows, i2] = 1.0
        inside = torch.arange(steps)[None, :] < lengths[:, None]
        x = torch.stack([values * inside, markers], dim=-1)  # (B, T, 2)
        target = self.combine(values[rows, i1], values[rows, i2])
        return Batch(x, target, lengths, n)

    def combine(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return 0.5 + (x1 + x2) / 4


@dataclass(frozen=True)
class Multiplication1997(Adding1997):
    """The 1997 multiplication problem: as adding, with values in [0, 1] and target X1 * X2."""

    name = "multiplication"
    baseline = 0.4 / 3 - 0.275 ** 2  # Var(X1 X2): E[X1] = 0.55, E[X1^2] = 0.4
    PAPER = {100: 1_273_000}
    low, high = 0.0, 1.0
    first_value = 1.0

    def combine(self, x1, x2):
        return x1 * x2
