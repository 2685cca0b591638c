import random

import pytest
import torch

from lstmkit.tasks import make
from lstmkit.tasks.reber import SYMBOLS, ContinualReber, embedded_reber_string


def test_every_symbol_is_a_legal_successor_and_the_second_last_repeats_the_second():
    rng = random.Random(0)
    for _ in range(500):
        symbols, legal = embedded_reber_string(rng)
        assert len(symbols) == len(legal)
        assert all(nxt in ok for nxt, ok in zip(symbols[1:], legal))
        assert symbols[0] == "B" and symbols[-1] == "E" and symbols[1] in "TP"
        assert symbols[-2] == symbols[1] and legal[-3] == symbols[1]


def test_sets_are_fixed_by_the_seed_and_sampled_with_their_targets():
    task, again, other = make("reber", seed=3), make("reber", seed=3), make("reber", seed=4)
    assert torch.equal(task.sets["test"][0], again.sets["test"][0])
    assert not torch.equal(task.sets["test"][0], other.sets["test"][0])
    b = task.sample(64, torch.Generator().manual_seed(0))
    assert b.target.shape == (*b.x.shape, len(SYMBOLS))
    # Two successors are legal inside the inner string, exactly one at the remembered symbol.
    rows = torch.arange(64)
    assert (b.target[rows, b.lengths - 3].sum(-1) == 1).all()


def test_a_perfect_predictor_is_right_and_one_slip_is_wrong():
    task = make("reber")
    b = task.sample(16, torch.Generator().manual_seed(0))
    logits = b.target * 20 - 10
    assert not task.wrong(logits, b).any()
    logits[0, b.lengths[0] - 3] *= -1  # forget which of T/P came first
    assert task.wrong(logits, b).tolist() == [True] + [False] * 15


def test_continual_stream_never_breaks_and_counts_strings():
    task = ContinualReber(chunk=40)
    chunks = task.train_batches(4, torch.Generator().manual_seed(0))
    batches = [next(chunks) for _ in range(20)]
    stream = "".join(SYMBOLS[i] for b in batches for i in b.x[0].tolist())
    assert not batches[0].carry and all(b.carry and b.lengths is None for b in batches[1:])
    targets = torch.cat([b.target[0] for b in batches])
    for t in range(len(stream) - 1):
        assert targets[t, SYMBOLS.index(stream[t + 1])] == 1
    # Each embedded string holds two Es; a stream may stop between them.
    es = sum(int((b.x == SYMBOLS.index("E")).sum()) for b in batches)
    assert abs(sum(b.sequences for b in batches) - es / 2) <= 4 / 2


def test_continual_length_is_the_truncation_chunk():
    task = make("reber-continual", length=100)
    assert task.chunk == 100 and "chunk=100" in task.describe()
    assert task.sample(2, torch.Generator().manual_seed(0)).x.shape == (2, 100)
    with pytest.raises(ValueError, match="chunk"):
        ContinualReber(chunk=0)


def test_continual_training_streams_restart_from_zero_state_like_test_streams():
    task = ContinualReber(chunk=10, test_symbols=30)
    chunks = task.train_batches(2, torch.Generator().manual_seed(0))
    assert [next(chunks).carry for _ in range(7)] == [False, True, True] * 2 + [False]
