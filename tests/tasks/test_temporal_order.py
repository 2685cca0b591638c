import pytest
import torch

from lstmkit.tasks.temporal_order import SYMBOLS, TemporalOrder, TemporalOrder3

X, Y, E, B = (SYMBOLS.index(s) for s in "XYEB")


@pytest.mark.parametrize("task", [TemporalOrder(), TemporalOrder3()], ids=lambda t: t.name)
def test_sequences_follow_the_definition(task):
    b = task.sample(4000, torch.Generator().manual_seed(0))
    assert b.lengths.min() >= 100 and b.lengths.max() <= 110
    rows = torch.arange(len(b.x))
    assert (b.x[:, 0] == E).all() and (b.x[rows, b.lengths - 1] == B).all()
    relevant = (b.x == X) | (b.x == Y)
    assert (relevant.sum(1) == len(task.windows)).all()
    positions = relevant.nonzero()[:, 1].view(len(b.x), -1)
    for k, (low, high) in enumerate(task.windows):
        assert positions[:, k].min() == low and positions[:, k].max() == high
    # The class spells the X/Y order as binary digits, first symbol most significant.
    digits = (b.x[relevant] == Y).long().view(len(b.x), -1)
    weights = 2 ** torch.arange(len(task.windows) - 1, -1, -1)
    assert torch.equal((digits * weights).sum(1), b.target)
    inside = torch.arange(b.x.shape[1])[None, :] < b.lengths[:, None] - 1
    inside[:, 0] = False
    assert (b.x[inside & ~relevant] < 4).all()  # everything else is a, b, c or d


@pytest.mark.parametrize("task", [TemporalOrder(), TemporalOrder3()], ids=lambda t: t.name)
def test_classes_are_balanced(task):
    b = task.sample(8000, torch.Generator().manual_seed(1))
    counts = torch.bincount(b.target, minlength=task.output_size).float()
    expected = len(b.target) / task.output_size
    assert ((counts - expected).abs() < 5 * expected ** 0.5).all()


def test_criterion_is_every_output_within_03():
    task = TemporalOrder()
    b = task.sample(3, torch.Generator().manual_seed(0))
    b = b._replace(target=torch.tensor([0, 0, 0]))
    probs = torch.tensor([[0.75, 0.1, 0.1, 0.05], [0.69, 0.31, 0.0, 0.0], [0.2, 0.8, 0, 0]])
    assert task.wrong(probs.clamp_min(1e-9).log(), b).tolist() == [False, True, True]
