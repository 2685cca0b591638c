"""The embedded Reber grammar (Hochreiter & Schmidhuber 1997, Exp. 1) and its continual form
(Gers, Schmidhuber & Cummins 2000).

Symbols ``B T P S X V E``. A Reber string walks this graph from node 0, each branch with
probability 1/2, between a leading B and a closing E::

    0 -T-> 1   0 -P-> 2   1 -S-> 1   1 -X-> 3   2 -T-> 2   2 -V-> 4
    3 -X-> 2   3 -S-> end   4 -P-> 3   4 -V-> end

An embedded string is ``B``, T or P, a Reber string, the same T or P again, ``E``. The task is
next-symbol prediction: at each step the outputs (sigmoids) say which symbols may come next, and
a string is right when, at every step, exactly the legal successors have an output above 0.5.
Only the second-last symbol needs memory: the T or P chosen at the start, across the whole inner
string.

The continual form is one endless stream of embedded strings that is never cut, so a network
must learn to reset its own memory; Gers et al. showed that an LSTM without forget gate cannot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lstmkit.tasks.base import Batch, Evaluation, Task, valid_steps

SYMBOLS = "BTPSXVE"
_ID = {s: i for i, s in enumerate(SYMBOLS)}
_GRAPH = {0: (("T", 1), ("P", 2)), 1: (("S", 1), ("X", 3)), 2: (("T", 2), ("V", 4)),
          3: (("X", 2), ("S", None)), 4: (("P", 3), ("V", None))}


def reber_string(rng: random.Random) -> tuple[str, list[str]]:
    """A Reber string and, for each of its symbols, the string of symbols legal after it."""
    symbols, legal, node = ["B"], [], 0
    while node is not None:
        legal.append("".join(s for s, _ in _GRAPH[node]))
        symbol, node = _GRAPH[node][rng.randrange(2)]
        symbols.append(symbol)
    legal.append("E")
    symbols.append("E")
    return "".join(symbols), legal


def embedded_reber_string(rng: random.Random) -> tuple[str, list[str]]:
    """An embedded Reber string and the legal successors of each symbol (the last: B, the
    start of the next string in a stream)."""
    outer = "TP"[rng.randrange(2)]
    inner, inner_legal = reber_string(rng)
    symbols = "B" + outer + inner + outer + "E"
    legal = ["TP", "B", *inner_legal, outer, "E", "B"]
    return symbols, legal


def encode(strings: list[tuple[str, list[str]]]):
    """Token ids (B, T), multi-hot legal successors (B, T, 7) and lengths (B,) of strings; the
    closing E of each string is input but has no target within one string."""
    lengths = torch.tensor([len(s) for s, _ in strings])
    steps = int(lengths.max())
    x = torch.zeros(len(strings), steps, dtype=torch.long)
    target = torch.zeros(len(strings), steps, len(SYMBOLS))
    for row, (symbols, legal) in enumerate(strings):
        x[row, :len(symbols)] = torch.tensor([_ID[s] for s in symbols])
        for t, successors in enumerate(legal):
            target[row, t, [_ID[s] for s in successors]] = 1.0
    return x, target, lengths


def _step_loss(out, batch, mask):
    loss = F.binary_cross_entropy_with_logits(out, batch.target, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum()


def _steps_wrong(out, batch):
    """(B, T) bool: steps whose thresholded outputs are not exactly the legal successors."""
    return ((out > 0) != (batch.target > 0.5)).any(-1)


@dataclass(frozen=True)
class EmbeddedReber(Task):
    """Exp. 1: a fixed set of ``train_strings`` strings to learn from and as many to test on;
    solved when every symbol of both sets is predicted."""

    seed: int = 0
    train_strings: int = 256
    name = "reber"
    vocab_size = len(SYMBOLS)
    output_size = len(SYMBOLS)
    pooling = "none"
    PAPER = 8_440
    sets: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        rng = random.Random(self.seed)
        sets = {part: encode([embedded_reber_string(rng) for _ in range(self.train_strings)])
                for part in ("train", "test")}
        object.__setattr__(self, "sets", sets)

    @property
    def test_size(self) -> int:
        return 2 * self.train_strings

    @property
    def lag(self) -> int:
        return int(self.sets["train"][2].max())

    @property
    def paper(self):
        return self.PAPER

    def _mask(self, batch):
        # The last symbol's successor belongs to the next string, which does not exist here.
        return valid_steps(batch.lengths - 1, *batch.x.shape).float()

    def loss(self, out, batch):
        return _step_loss(out, batch, self._mask(batch))

    def wrong(self, out, batch):
        return (_steps_wrong(out, batch) & (self._mask(batch) > 0)).any(-1)

    def sample(self, n, generator):
        """``n`` strings drawn from the training set."""
        x, target, lengths = self.sets["train"]
        rows = torch.randint(0, len(x), (n,), generator=generator)
        steps = int(lengths[rows].max())
        return Batch(x[rows, :steps], target[rows, :steps], lengths[rows], n)

    @torch.no_grad()
    def evaluate(self, model, n, generator, batch_size=256):
        """Every string of the training and the test set (``n`` is ignored: the sets are
        fixed)."""
        wrong, loss = 0, 0.0
        for x, target, lengths in self.sets.values():
            batch = Batch(x, target, lengths, len(x))
            out, _ = model(x, lengths=lengths)
            wrong += int(self.wrong(out, batch).sum())
            loss += float(self.loss(out, batch)) * len(x)
        return Evaluation(wrong, self.test_size, loss / self.test_size)


@dataclass(frozen=True)
class ContinualReber(Task):
    """Gers et al. (2000): parallel streams of embedded Reber strings, cut into chunks of
    ``chunk`` symbols for truncated backpropagation; the state is carried from chunk to chunk
    and never reset within a stream (``test_symbols`` long, about 830 strings). A test runs
    ``test_size`` fresh streams of ``test_symbols`` symbols each from the zero state and counts
    the mispredicted symbols; solved when there are none."""

    chunk: int = 50
    test_symbols: int = 10_000
    name = "reber-continual"
    vocab_size = len(SYMBOLS)
    output_size = len(SYMBOLS)
    pooling = "none"
    test_size = 8
    """Streams in a test."""

    def __post_init__(self):
        for name in ("chunk", "test_symbols"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")

    def describe(self) -> str:
        return f"{self.name} chunk={self.chunk}"

    @property
    def lag(self) -> int:
        return 60  # an embedded string is rarely longer

    def loss(self, out, batch):
        return _step_loss(out, batch, torch.ones(batch.x.shape))

    def wrong(self, out, batch):
        """(B, T) bool: the mispredicted symbols (a stream has no per-sequence verdict)."""
        return _steps_wrong(out, batch)

    def _streams(self, n, generator):
        """Endless (ids (n, chunk), multi-hot (n, chunk, 7), strings completed) chunks."""
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        buffers = [([], [], []) for _ in range(n)]  # symbols, legal successors, string ends
        while True:
            for symbols, legal, ends in buffers:
                while len(symbols) < self.chunk:
                    s, lg = embedded_reber_string(rng)
                    symbols.extend(s)
                    legal.extend(lg)
                    ends.extend([False] * (len(s) - 1) + [True])
            x, target, _ = encode([(s[:self.chunk], lg[:self.chunk]) for s, lg, _ in buffers])
            completed = sum(sum(e[:self.chunk]) for _, _, e in buffers)
            for parts in buffers:
                for part in parts:
                    del part[:self.chunk]
            yield x, target, completed

    def sample(self, n, generator):
        x, target, _ = next(self._streams(n, generator))
        return Batch(x, target, None, n)

    def train_batches(self, batch_size, generator):
        """Streams as long as a test's, each begun from the zero state as a test's are: a network
        that never met that state again after its first chunk mispredicted the first string of
        every test stream (all of the 35-50 errors in 80,000 it kept making)."""
        chunks = max(1, self.test_symbols // self.chunk)
        while True:
            streams = self._streams(batch_size, generator)
            for k in range(chunks):
                x, target, completed = next(streams)
                yield Batch(x, target, None, completed, carry=k > 0)

    @torch.no_grad()
    def evaluate(self, model, n, generator, batch_size=256):
        """``n`` fresh streams of ``test_symbols`` symbols each, run without a reset; counts
        mispredicted symbols of all ``n * test_symbols``."""
        streams, state = self._streams(n, generator), None
        wrong, loss, chunks = 0, 0.0, self.test_symbols // self.chunk
        for _ in range(chunks):
            x, target, _ = next(streams)
            batch = Batch(x, target)
            out, state = model(x, state)
            wrong += int(self.wrong(out, batch).sum())
            loss += float(self.loss(out, batch))
        return Evaluation(wrong, n * chunks * self.chunk, loss / chunks)
