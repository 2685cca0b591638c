import random

import torch

from lstmkit.tasks import make
from lstmkit.tasks.brackets import CLOSE, OPEN, evaluate_brackets, random_expression
from lstmkit.tasks.modern import TEST_MAX_LENGTH

SYMBOLS = "01234+-*()"


def test_expressions_have_the_length_asked_and_python_agrees_on_their_value():
    rng = random.Random(0)
    for n in (1, 3, 5, 9, 41, 255):
        for _ in range(50):
            tokens = random_expression(n, rng)
            assert len(tokens) == n
            text = "".join(SYMBOLS[t] for t in tokens)
            assert evaluate_brackets(tokens) == eval(text) % 5, text


def test_brackets_appear_balanced_and_nested():
    tokens = [t for _ in range(20) for t in random_expression(101, random.Random(_))]
    assert tokens.count(OPEN) == tokens.count(CLOSE) > 0
    assert evaluate_brackets([OPEN, 2, 5, 3, CLOSE, 7, 4]) == (2 + 3) * 4 % 5
    assert evaluate_brackets([2, 6, OPEN, 3, 7, OPEN, 1, 5, 1, CLOSE, CLOSE]) == (2 - 6) % 5


def test_trains_short_and_tests_long():
    task = make("modular-brackets")
    g = torch.Generator().manual_seed(0)
    b = task.sample(500, g)
    assert int(b.lengths.max()) <= 40 and (b.lengths % 2 == 1).all()
    assert (b.x[torch.arange(b.x.shape[1])[None, :] >= b.lengths[:, None]] == 0).all()
    long = task.draw(torch.tensor([TEST_MAX_LENGTH, 41]), g)
    assert long.lengths.tolist() == [255, 41]
    for row, n, target in zip(long.x, long.lengths, long.target):
        assert evaluate_brackets(row[:n].tolist()) == target
