import math

import pytest
import torch

from lstmkit.tasks import make
from lstmkit.tasks.recall import IGNORE, KEYS


def test_layout_keys_values_and_queries():
    task = make("mqar", length=6)
    b = task.sample(200, torch.Generator().manual_seed(0))
    assert b.x.shape == (200, 18) and b.target.shape == (200, 18)
    keys, values, queries = b.x[:, 0:12:2], b.x[:, 1:12:2], b.x[:, 12:]
    assert ((keys >= 1) & (keys <= KEYS)).all() and ((values > KEYS) & (values <= 2 * KEYS)).all()
    assert all(len(set(row.tolist())) == 6 for row in keys)  # distinct keys
    assert torch.equal(queries.sort(-1).values, keys.sort(-1).values)  # every key queried once
    assert (b.target[:, :12] == IGNORE).all()
    for row_keys, row_values, row_q, row_t in zip(keys, values, queries, b.target[:, 12:]):
        answer = dict(zip(row_keys.tolist(), row_values.tolist()))
        assert [answer[q] for q in row_q.tolist()] == row_t.tolist()


def test_loss_and_accuracy_count_queries_only():
    task = make("mqar", length=4)
    b = task.sample(10, torch.Generator().manual_seed(1))
    out = torch.zeros(10, 12, task.output_size)
    assert math.isclose(float(task.loss(out, b)), math.log(task.output_size), rel_tol=1e-6)
    out.scatter_(-1, b.target.clamp(min=0)[..., None], 10.0)  # right at every query
    assert not task.wrong(out, b).any() and task.wrong(out, b).shape == (10, 4)


def test_length_must_fit_the_keys():
    with pytest.raises(ValueError, match="length: expected the number of key-value pairs"):
        make("mqar", length=KEYS + 1)
