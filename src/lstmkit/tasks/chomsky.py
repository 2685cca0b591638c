"""More of the length-generalisation tasks of Deletang et al. 2023 ("Neural Networks and the
Chomsky Hierarchy"), as the xLSTM paper runs them (Beck et al. 2024, figure 4): trained on
lengths 1..``length`` (40 by default), tested on ``length`` + 1..256.

Regular (a finite automaton solves them):

- even-pairs: a string over {a, b} (ids 0, 1); the answer is whether its ab and ba pairs are
  even in number, which holds exactly when the first and last symbols agree.
- cycle-navigation: moves -1, 0, +1 (ids 0, 1, 2) on a cycle of 5 positions from position 0;
  the answer is the final position.

Deterministic context-free (a stack solves them) and context-sensitive, string to string:

- reverse-string: a binary string; the output is the string reversed.
- stack-manipulation: a binary stack, bottom to top (ids 0, 1), then actions POP, PUSH 0,
  PUSH 1 (ids 2, 3, 4; a POP on an empty stack does nothing); the output is the final stack
  from the top, then the end symbol 2.
- bucket-sort (context-sensitive): a string over 5 symbols; the output is it sorted.

The string-to-string tasks read the input, then one query symbol per output step (the id after
the input's), and answer at those steps (Deletang et al.'s layout). They are scored per output
token, as the paper scores them: a test's ``wrong`` and ``total`` count tokens, and training
and scoring stop at stack-manipulation's end symbol (the paper pads after it with zeros and
leaves the padding out of its accuracy). A length is the input string's; the sequence the model
reads is the input and its queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lstmkit.tasks.base import Batch, valid_steps
from lstmkit.tasks.modern import _Generalisation
from lstmkit.tasks.recall import IGNORE

CYCLE = 5


def _masked(symbols: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """symbols (B, T) with zeros past each length."""
    return symbols * valid_steps(lengths, *symbols.shape)


@dataclass(frozen=True)
class EvenPairs(_Generalisation):
    name = "even-pairs"
    vocab_size = 2
    output_size = 2

    def draw(self, lengths, generator):
        x = _masked(torch.randint(0, 2, (len(lengths), int(lengths.max())), generator=generator),
                    lengths)
        last = x.gather(1, (lengths - 1)[:, None])[:, 0]
        return Batch(x, (x[:, 0] == last).long(), lengths, len(lengths))


@dataclass(frozen=True)
class CycleNavigation(_Generalisation):
    name = "cycle-navigation"
    vocab_size = 3
    output_size = CYCLE

    def draw(self, lengths, generator):
        moves = torch.randint(0, 3, (len(lengths), int(lengths.max())), generator=generator)
        x = _masked(moves, lengths)
        steps = _masked(moves - 1, lengths)
        return Batch(x, steps.sum(1) % CYCLE, lengths, len(lengths))


@dataclass(frozen=True)
class _Transduction(_Generalisation):
    """A string in, a string out at the query steps that follow it; scored per output token."""

    pooling = "none"
    symbols = 2
    """Input symbols; the query symbol's id is ``symbols``."""

    @property
    def vocab_size(self) -> int:
        return self.symbols + 1

    def transduce(self, strings: list[list[int]]) -> list[list[int]]:
        """The output of each input string."""
        raise NotImplementedError

    def strings(self, lengths: torch.Tensor, generator: torch.Generator) -> list[list[int]]:
        rows = torch.randint(0, self.symbols, (len(lengths), int(lengths.max())),
                             generator=generator)
        return [row[:n].tolist() for row, n in zip(rows, lengths.tolist())]

    def draw(self, lengths, generator):
        strings = self.strings(lengths, generator)
        outputs = self.transduce(strings)
        total = [len(s) + len(o) for s, o in zip(strings, outputs)]
        x = torch.zeros(len(strings), max(total), dtype=torch.long)
        target = torch.full_like(x, IGNORE)
        for b, (s, o) in enumerate(zip(strings, outputs)):
            x[b, :len(s)] = torch.tensor(s, dtype=torch.long)
            x[b, len(s):total[b]] = self.symbols
            target[b, len(s):total[b]] = torch.tensor(o, dtype=torch.long)
        return Batch(x, target, torch.tensor(total), len(strings))

    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch.target.flatten(), ignore_index=IGNORE)

    def wrong(self, out, batch):
        """(B, T) bool: which output tokens are wrong (False where nothing is scored)."""
        return (out.argmax(-1) != batch.target) & (batch.target != IGNORE)

    def scored(self, batch):
        return int((batch.target != IGNORE).sum())


@dataclass(frozen=True)
class ReverseString(_Transduction):
    name = "reverse-string"
    output_size = 2

    def transduce(self, strings):
        return [s[::-1] for s in strings]


POP, PUSH_0, PUSH_1, END = 2, 3, 4, 2


@dataclass(frozen=True)
class StackManipulation(_Transduction):
    name = "stack-manipulation"
    symbols = 5
    output_size = 3

    def strings(self, lengths, generator):
        """A stack of 1..n - 1 bits then actions (a length of 1 is a one-bit stack)."""
        out = []
        for n in lengths.tolist():
            size = int(torch.randint(1, n, (1,), generator=generator)) if n > 1 else 1
            stack = torch.randint(0, 2, (size,), generator=generator).tolist()
            actions = torch.randint(POP, PUSH_1 + 1, (n - size,), generator=generator).tolist()
            out.append(stack + actions)
        return out

    def transduce(self, strings):
        outputs = []
        for s in strings:
            stack = []
            for symbol in s:
                if symbol < POP:  # the initial stack's bits
                    stack.append(symbol)
                elif symbol == POP:
                    if stack:
                        stack.pop()
                else:
                    stack.append(symbol - PUSH_0)
            outputs.append(stack[::-1] + [END])
        return outputs


@dataclass(frozen=True)
class BucketSort(_Transduction):
    name = "bucket-sort"
    symbols = 5
    output_size = 5

    def transduce(self, strings):
        return [sorted(s) for s in strings]
