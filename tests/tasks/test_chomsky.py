"""The Deletang et al. tasks: targets against direct definitions, the query layout of the
string-to-string tasks, and per-token scoring."""

import pytest
import torch

from lstmkit.apps.memory import MemoryConfig, train
from lstmkit.tasks import make
from lstmkit.tasks.modern import TEST_MAX_LENGTH
from lstmkit.tasks.recall import IGNORE


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_even_pairs_counts_the_ab_and_ba_pairs():
    task = make("even-pairs")
    batch = task.sample(200, _gen())
    for row, n, target in zip(batch.x, batch.lengths.tolist(), batch.target.tolist()):
        s = row[:n].tolist()
        pairs = sum(a != b for a, b in zip(s, s[1:]))
        assert target == int(pairs % 2 == 0)
    assert batch.lengths.min() >= 1 and batch.lengths.max() <= 40


def test_cycle_navigation_walks_the_cycle():
    batch = make("cycle-navigation").sample(200, _gen())
    for row, n, target in zip(batch.x, batch.lengths.tolist(), batch.target.tolist()):
        position = 0
        for move in row[:n].tolist():
            position = (position + {0: -1, 1: 0, 2: 1}[move]) % 5
        assert target == position
    assert (batch.x[torch.arange(batch.x.shape[1])[None, :] >= batch.lengths[:, None]] == 0).all()


def _strings(batch, symbols):
    """(input, output) per sequence, read back from the query layout."""
    out = []
    for x, target, n in zip(batch.x, batch.target, batch.lengths.tolist()):
        queries = (x[:n] == symbols).nonzero()[:, 0]
        start = int(queries[0])
        assert (queries == torch.arange(start, n)).all()  # input, then queries to the end
        scored = target[start:n]
        out.append((x[:start].tolist(), scored[scored != IGNORE].tolist()))
        assert (target[:start] == IGNORE).all() and (target[n:] == IGNORE).all()
    return out


@pytest.mark.parametrize("name, symbols, expected", [
    ("reverse-string", 2, lambda s: s[::-1]),
    ("bucket-sort", 5, sorted),
])
def test_string_to_string_targets(name, symbols, expected):
    task = make(name)
    for s, o in _strings(task.sample(100, _gen()), symbols):
        assert o == expected(s) and len(s) >= 1


def test_stack_manipulation_follows_deletangs_examples():
    task = make("stack-manipulation")
    assert task.transduce([[0, 1, 1, 0, 4, 2, 2]]) == [[1, 1, 0, 2]]
    assert task.transduce([[1, 1, 0, 2, 2, 2]]) == [[2]]
    assert task.transduce([[1, 2, 2, 3]]) == [[0, 2]]  # a POP on the empty stack does nothing
    for s, o in _strings(task.sample(100, _gen()), 5):
        assert o[-1] == 2 and len(o) <= len(s) + 1 and s[0] in (0, 1)


@pytest.mark.parametrize("name", ["reverse-string", "stack-manipulation", "bucket-sort"])
def test_a_test_counts_output_tokens_on_unseen_lengths(name):
    task = make(name, length=5)

    class Perfect(torch.nn.Module):  # answers every scored token from the targets it is shown
        def forward(self, x, lengths=None):
            return torch.nn.functional.one_hot(self.target.clamp(min=0), task.output_size) \
                .float() * 10, None

    model = Perfect()
    real = task.draw

    def draw(lengths, generator):
        assert lengths.min() > 5 and lengths.max() <= TEST_MAX_LENGTH
        batch = real(lengths, generator)
        model.target = batch.target
        return batch

    object.__setattr__(task, "draw", draw)
    result = task.evaluate(model, 20, _gen())
    assert result.wrong == 0 and result.total > 20 * 5  # tokens, not sequences


def test_memory_trains_an_lstm_on_a_string_to_string_task(tmp_path):
    result = train(MemoryConfig(task="reverse-string", length=4, budget="256", hidden=8,
                                check_every=128, out=str(tmp_path), quiet=True))
    assert result["test"]["total"] > 1024 and result["sequences_trained"] >= 256
