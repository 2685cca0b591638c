"""Multi-Query Associative Recall, MQAR (Arora et al. 2023, "Zoology"; Beck et al. 2024, xLSTM,
figure 5): a memory of N key-value pairs queried N times.

A sequence is ``k_1 v_1 ... k_N v_N q_1 ... q_N``: N distinct keys from ``KEYS`` key symbols
(ids 1..32), each followed by its value (ids 33..64, drawn with replacement), then every key once
more, in a random order, as a query. At each query the model must output that key's value; other
steps are not scored. ``length`` is N. Accuracy counts queries, as the papers do: a test's
``wrong`` and ``total`` count queries, not sequences. Guessing a value blind costs ln 32 nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lstmkit.tasks.base import Batch, Evaluation, Task

KEYS = 32
"""Key symbols (and value symbols)."""
IGNORE = -100
"""The target of steps that are not queries (cross-entropy's ignore_index)."""


@dataclass(frozen=True)
class MQAR(Task):
    """Solved when at most 1% of the test queries are answered wrong."""

    length: int = 8
    name = "mqar"
    vocab_size = 2 * KEYS + 1
    output_size = 2 * KEYS + 1
    pooling = "none"
    tolerance = 0.01
    test_size = 1024
    baseline = math.log(KEYS)

    def __post_init__(self):
        if not isinstance(self.length, int) or not 1 <= self.length <= KEYS:
            raise ValueError(f"length: expected the number of key-value pairs, an int in "
                             f"1..{KEYS}, got {self.length!r}")

    @property
    def lag(self) -> int:
        return 3 * self.length

    def describe(self) -> str:
        return f"{self.name} pairs={self.length}"

    def sample(self, n, generator):
        N = self.length
        keys = torch.rand(n, KEYS, generator=generator).argsort(-1)[:, :N] + 1  # distinct
        values = torch.randint(KEYS + 1, 2 * KEYS + 1, (n, N), generator=generator)
        order = torch.rand(n, N, generator=generator).argsort(-1)
        context = torch.stack([keys, values], -1).flatten(1)  # (n, 2N): k1 v1 k2 v2 ...
        x = torch.cat([context, keys.gather(1, order)], 1)  # (n, 3N)
        target = torch.full_like(x, IGNORE)
        target[:, 2 * N:] = values.gather(1, order)
        return Batch(x, target, None, n)

    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch.target.flatten(), ignore_index=IGNORE)

    def wrong(self, out, batch):
        """(B, N) bool: which queries the model answered wrong."""
        N = self.length
        return out[:, -N:].argmax(-1) != batch.target[:, -N:]

    @torch.no_grad()
    def evaluate(self, model, n, generator, batch_size=256):
        """Test on ``n`` fresh sequences; wrong and total count their queries."""
        wrong, loss, done = 0, 0.0, 0
        while done < n:
            batch = self.sample(min(batch_size, n - done), generator)
            out, _ = model(batch.x)
            wrong += int(self.wrong(out, batch).sum())
            loss += float(self.loss(out, batch)) * len(batch.x)
            done += len(batch.x)
        return Evaluation(wrong, n * self.length, loss / n)
