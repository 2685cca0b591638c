import math

import torch

from lstmkit.tasks import make
from lstmkit.tasks.modern import TEST_MAX_LENGTH, evaluate_expression


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_modern_adding_marks_one_step_per_half():
    task = make("adding-modern", length=60)
    b = task.sample(2000, _g())
    marks = b.x[..., 1]
    assert (marks[:, :30].sum(1) == 1).all() and (marks[:, 30:].sum(1) == 1).all()
    torch.testing.assert_close(b.target, (b.x[..., 0] * marks).sum(1))
    assert abs(float(((b.target - 1) ** 2).mean()) - task.baseline) < 0.01


def test_copy_layout_and_baseline():
    task = make("copy", length=30)
    b = task.sample(100, _g())
    assert b.x.shape == (100, 50)
    assert torch.equal(b.x[:, :10], b.target[:, -10:])
    assert (b.x[:, :10] >= 1).all() and (b.x[:, :10] <= 8).all()
    assert (b.x[:, 39] == 9).all() and (b.x[:, 10:39] == 0).all() and (b.x[:, 40:] == 0).all()
    assert (b.target[:, :40] == 0).all()
    assert math.isclose(task.baseline, 10 * math.log(8) / 50)
    # Blank, then a uniform guess over the eight symbols, scores the baseline.
    out = torch.full((100, 50, 10), -1e9)
    out[:, :40, 0] = 0.0
    out[:, 40:, 1:9] = 0.0
    assert math.isclose(float(task.loss(out, b)), task.baseline, rel_tol=1e-5)


def test_parity_trains_short_and_tests_long():
    task = make("parity")
    b = task.sample(3000, _g())
    assert b.lengths.min() == 1 and b.lengths.max() == 40
    assert torch.equal(b.target, b.x.sum(1) % 2)
    assert set(b.lengths.tolist()) >= {1, 2}

    class Spy(torch.nn.Module):
        seen = []

        def forward(self, x, lengths=None):
            self.seen.append(lengths)
            return torch.zeros(len(x), 2), None

    task.evaluate(Spy(), 300, _g())
    lengths = torch.cat(Spy.seen)
    assert lengths.min() > 40 and lengths.max() <= TEST_MAX_LENGTH


def test_modular_targets_agree_with_python_arithmetic():
    task = make("modular")
    b = task.sample(500, _g())
    assert (b.lengths % 2 == 1).all()
    text = {5: "+", 6: "-", 7: "*"}
    for row, n, target in zip(b.x, b.lengths.tolist(), b.target.tolist()):
        tokens = row[:n].tolist()
        expression = "".join(text.get(t, str(t)) if i % 2 else str(t)
                             for i, t in enumerate(tokens))
        assert eval(expression) % 5 == target == evaluate_expression(tokens)  # noqa: S307
