"""Modular arithmetic with brackets (Deletang et al. 2023, "Neural Networks and the Chomsky
Hierarchy", a context-free task; Beck et al. 2024, xLSTM, figure 4).

Operands 0..4, the operators +, -, * and the brackets ( ) (ids 0-4, 5-7, 8-9); the answer is
the value mod 5 with * binding tighter than + and -. Every expression has an odd number of
tokens (each operator and each pair of brackets adds two), so an even length drops one token.
Trained on lengths 1..``length`` (40 by default) and tested on ``length`` + 1..256, as the
bracket-free :class:`~lstmkit.tasks.modern.Modular`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from lstmkit.tasks.base import Batch
from lstmkit.tasks.modern import MINUS, MODULUS, PLUS, TIMES, _Generalisation

OPEN, CLOSE = 8, 9
BRACKET_PROBABILITY = 0.3
"""How often an expression of three or more tokens is a bracketed one."""


def random_expression(n: int, rng: random.Random) -> list[int]:
    """A random well-formed expression of exactly ``n`` tokens (``n`` odd), built iteratively
    (lengths reach 255, deeper than Python's recursion would like)."""
    out: list[int] = []
    todo: list[int | tuple[int]] = [n]  # a length to expand, or a token (in a tuple) to emit
    while todo:
        item = todo.pop()
        if isinstance(item, tuple):
            out.append(item[0])
        elif item == 1:
            out.append(rng.randrange(MODULUS))
        elif rng.random() < BRACKET_PROBABILITY:
            todo += [(CLOSE,), item - 2, (OPEN,)]
        else:
            left = 2 * rng.randrange((item - 1) // 2) + 1  # odd, 1..item - 2
            todo += [item - 1 - left, (rng.choice((PLUS, MINUS, TIMES)),), left]
    return out


def evaluate_brackets(tokens: list[int]) -> int:
    """The value mod 5 of a well-formed expression, * before + and -, brackets first."""
    stack: list[tuple] = []  # (total, term, sign, operator) outside each open bracket
    total, term, sign, op = 0, None, 1, None
    for token in tokens:
        if token == OPEN:
            stack.append((total, term, sign, op))
            total, term, sign, op = 0, None, 1, None
            continue
        if token == CLOSE:
            value = (total + sign * term) % MODULUS
            total, term, sign, op = stack.pop()
        elif token < MODULUS:
            value = token
        else:
            op = token
            if token != TIMES:
                total, term, sign = total + sign * term, None, 1 if token == PLUS else -1
            continue
        term = value if term is None or op != TIMES else term * value % MODULUS
    return (total + sign * term) % MODULUS


@dataclass(frozen=True)
class ModularBrackets(_Generalisation):
    name = "modular-brackets"
    vocab_size = 10
    output_size = MODULUS

    def draw(self, lengths, generator):
        lengths = lengths - (lengths % 2 == 0).long()
        rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
        rows = [random_expression(k, rng) for k in lengths.tolist()]
        x = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for b, row in enumerate(rows):
            x[b, :len(row)] = torch.tensor(row)
        target = torch.tensor([evaluate_brackets(row) for row in rows])
        return Batch(x, target, lengths, len(rows))
