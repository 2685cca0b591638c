import pytest
import torch

from lstmkit.tasks import make
from lstmkit.tasks.adding import Adding1997, Multiplication1997


def _batch(task, n=2000, seed=0):
    return task.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [20, 100, 500])
def test_lengths_and_markers_follow_the_definition(t):
    b = _batch(Adding1997(t), 500)
    assert b.lengths.min() >= t and b.lengths.max() <= t + t // 10
    values, markers = b.x[..., 0], b.x[..., 1]
    rows = torch.arange(len(b.x))
    marked = markers == 1
    assert (marked.sum(1) == 2).all()
    first, second = marked.float().argmax(1), (marked.cumsum(1) == 2).float().argmax(1)
    assert (first < 10).all() and (second >= 1).all()
    # X2 is among the first T/2 - 1 pairs that are not pair 0 (marked -1) or X1's pair.
    assert (second <= t // 2 - 1 + (first >= 1).long()).all()
    assert ((markers[:, 0] == -1) | (first == 0)).all()
    assert (markers[rows, b.lengths - 1] == -1).all()
    inside = torch.arange(b.x.shape[1])[None, :] < b.lengths[:, None]
    assert (b.x[~inside] == 0).all()
    assert (values[inside].abs() <= 1).all()


def test_target_is_half_plus_quarter_sum_with_first_pair_zero():
    b = _batch(Adding1997(100), 3000)
    marked = b.x[..., 1] == 1
    x1x2 = (b.x[..., 0] * marked).sum(1)
    torch.testing.assert_close(b.target, 0.5 + x1x2 / 4)
    assert b.target.min() >= 0 and b.target.max() <= 1
    at_zero = marked[:, 0]
    assert at_zero.any() and (b.x[at_zero, 0, 0] == 0).all()


def test_constant_predictor_mse_matches_baseline():
    task = Adding1997(100)
    b = _batch(task, 40_000)
    mse = float(((b.target - b.target.mean()) ** 2).mean())
    assert abs(mse - task.baseline) < 0.002
    assert abs(task.baseline - 0.0417) < 0.003  # the paper's figure, which ignores X1 := 0


def test_multiplication_target_is_product_with_first_pair_one():
    task = Multiplication1997(100)
    b = _batch(task, 3000)
    values, marked = b.x[..., 0], b.x[..., 1] == 1
    product = torch.where(marked, values, torch.ones_like(values)).prod(1)
    torch.testing.assert_close(b.target, product)
    assert (values >= 0).all()
    assert (b.x[marked[:, 0], 0, 0] == 1).all()
    mse = float(((b.target - b.target.mean()) ** 2).mean())
    assert abs(mse - task.baseline) < 0.003


def test_same_seed_same_sequences_and_different_seed_different():
    task = make("adding", length=50)
    a, b, c = _batch(task, 8, 1), _batch(task, 8, 1), _batch(task, 8, 2)
    assert torch.equal(a.x, b.x) and torch.equal(a.target, b.target)
    assert not torch.equal(a.target, c.target)


def test_criterion_is_absolute_error_below_004():
    task = Adding1997(100)
    b = _batch(task, 4)
    out = (b.target + torch.tensor([0.0, 0.039, -0.041, 0.2]))[:, None]
    assert task.wrong(out, b).tolist() == [False, False, True, True]


def test_rejects_lengths_too_short_for_the_marks():
    with pytest.raises(ValueError, match="length"):
        Adding1997(10)
