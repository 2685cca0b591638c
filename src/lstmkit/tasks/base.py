"""What every memory task shares: a batch of sequences, the task interface, common criteria.

A task draws fresh sequences from a ``torch.Generator`` (so a seed fixes every draw), says how a
model's output is scored during training (``loss``) and which sequences a model got wrong under
the paper's criterion (``wrong``). Variable lengths travel as ``lengths`` (B,): steps past a
sequence's length are zero and never reach the model's outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Batch(NamedTuple):
    """Sequences and what the model should produce from them.

    Shape: x (B, T, I) floats, or (B, T) token ids; target (B,) / (B, O) for one answer per
    sequence, (B, T) / (B, T, O) for one per step; lengths (B,) int64 or None (all T long).
    ``sequences`` is how many training sequences the batch counts as (B, except for streams).
    ``carry``: the model continues from the previous batch's state (a stream cut in chunks).
    """

    x: torch.Tensor
    target: torch.Tensor
    lengths: torch.Tensor | None = None
    sequences: int = 0
    carry: bool = False


class Evaluation(NamedTuple):
    """A test: ``wrong`` of ``total`` sequences failed the criterion; ``loss`` is the task's
    training loss on them (MSE or cross-entropy), for comparison with a trivial baseline."""

    wrong: int
    total: int
    loss: float


@dataclass(frozen=True)
class Task:
    """A problem that only memory across ``lag`` steps solves. Subclasses set the class
    attributes and implement :meth:`sample`, :meth:`loss` and :meth:`wrong`."""

    name = ""
    input_size = 1
    """Features per step for float inputs; ignored when ``vocab_size`` > 0."""
    vocab_size = 0
    """Symbols of token inputs (0: float inputs)."""
    output_size = 1
    pooling = "last"
    """"last": one answer per sequence; "none": one per step."""
    test_size = 2560
    """Fresh sequences in a full test (the 1997 paper's 2,560 unless it says otherwise)."""
    tolerance = 0.0
    """Fraction of test sequences that may be wrong with the task still solved."""
    baseline = None
    """The loss of the best input-blind predictor, where known."""

    @property
    def lag(self) -> int:
        """The longest time lag the task spans (chrono initialisation's T_max)."""
        raise NotImplementedError

    @property
    def paper(self) -> int | None:
        """Training sequences the paper needed, where it reports a number."""
        return None

    def describe(self) -> str:
        return self.name

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` fresh sequences."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def wrong(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) bool: which sequences the model got wrong under the paper's criterion."""
        raise NotImplementedError

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Training batches, forever: fresh sequences by default."""
        while True:
            yield self.sample(batch_size, generator)

    @torch.no_grad()
    def evaluate(self, model, n: int, generator: torch.Generator, batch_size: int = 256):
        """Test ``model`` on ``n`` fresh sequences."""
        wrong, loss, done = 0, 0.0, 0
        while done < n:
            batch = self.sample(min(batch_size, n - done), generator)
            out, _ = model(batch.x, lengths=batch.lengths)
            wrong += int(self.wrong(out, batch).sum())
            loss += float(self.loss(out, batch)) * len(batch.x)
            done += len(batch.x)
        return Evaluation(wrong, n, loss / n)

    def solved(self, evaluation: Evaluation) -> bool:
        return evaluation.wrong <= self.tolerance * evaluation.total


class Regression(Task):
    """One real target per sequence, MSE loss; right when the absolute error is below
    ``threshold``."""

    threshold = 0.04

    def loss(self, out, batch):
        return F.mse_loss(out[:, 0], batch.target)

    def wrong(self, out, batch):
        return (out[:, 0] - batch.target).abs() >= self.threshold


class Classification(Task):
    """One class per sequence. Outputs are read as softmax probabilities; right when every one
    is within ``threshold`` of the one-hot target (the paper's "all outputs within 0.3")."""

    threshold = 0.3

    def loss(self, out, batch):
        return F.cross_entropy(out, batch.target)

    def wrong(self, out, batch):
        return within_one_hot(out, batch.target, self.threshold).logical_not()


def within_one_hot(logits: torch.Tensor, target: torch.Tensor, threshold: float):
    """(...) bool: every softmax output of ``logits`` (..., C) is within ``threshold`` of the
    one-hot ``target`` (...)."""
    error = logits.softmax(-1) - F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    return error.abs().amax(-1) < threshold


def valid_steps(lengths: torch.Tensor | None, batch: int, steps: int) -> torch.Tensor:
    """(B, T) bool: which steps lie inside their sequence."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool)
    return torch.arange(steps)[None, :] < lengths[:, None]


def uniform_ints(low: int, high: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) int64 uniform in [low, high], both ends included."""
    return torch.randint(low, high + 1, (n,), generator=generator)
