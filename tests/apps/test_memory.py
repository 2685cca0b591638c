import json
import math

import pytest
import torch

from lstmkit.apps import memory
from lstmkit.apps.memory import CELLS, MemoryConfig, build_model, parse_budget, train
from lstmkit.tasks import make
from lstmkit.tasks.base import Evaluation
from lstmkit.tasks.reber import ContinualReber


@pytest.fixture(autouse=True)
def _one_thread():
    # Small recurrent kernels on two busy cores wait seconds on their thread pool; training
    # here is single-threaded, as on the shared machine the experiments ran on.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("text, expected", [("small", 2048), ("1000", 1000), ("100k", 100_000),
                                            ("1.5M", 1_500_000), ("paper", 74_000)])
def test_budgets(text, expected):
    assert parse_budget(text, make("adding", length=100)) == expected


def test_paper_budget_falls_back_where_the_paper_has_no_number():
    assert parse_budget("paper", make("copy")) == memory.DEFAULT_BUDGET


@pytest.mark.parametrize("bad", ["lots", "0", "-5", "k"])
def test_bad_budget_is_a_value_error(bad):
    with pytest.raises(ValueError, match="budget: expected"):
        MemoryConfig(budget=bad)


@pytest.mark.parametrize("field, value", [("task", "nope"), ("cell", "lstm-x"), ("init", "x"),
                                          ("hidden", 0)])
def test_bad_config_is_a_value_error(field, value):
    with pytest.raises(ValueError, match=field):
        MemoryConfig(**{field: value})


def _gate_bias(model, gate, h, gates="ifgo"):
    k = gates.index(gate)
    return (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0)[k * h:(k + 1) * h]


def test_forget_init_sets_lstm_gate_biases():
    model, described = build_model(MemoryConfig(hidden=8, init="forget"), make("adding"))
    assert torch.allclose(_gate_bias(model, "f", 8), torch.tensor(3.0))
    assert torch.allclose(_gate_bias(model, "i", 8), torch.tensor(-3.0))
    assert "forget_bias 3" in described


def test_chrono_init_uses_the_task_lag():
    task = make("adding", length=200)
    model, described = build_model(MemoryConfig(hidden=64), task)  # chrono: the default
    forget = _gate_bias(model, "f", 64)
    assert forget.min() >= 0 and forget.max() <= math.log(task.lag - 1) + 1e-6
    assert torch.allclose(_gate_bias(model, "i", 64), -forget)
    assert str(task.lag) in described


def test_gru_forget_init_opens_the_update_gate_and_rnn_says_it_has_no_gates():
    model, _ = build_model(MemoryConfig(cell="gru", hidden=8, init="forget"),
                           make("adding"))
    assert torch.allclose(_gate_bias(model, "z", 8, "rzn"), torch.tensor(3.0))
    _, described = build_model(MemoryConfig(cell="rnn"), make("adding"))
    assert "no gates" in described


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_cell_builds_with_every_init(cell):
    for init in memory.INITS:
        model, _ = build_model(MemoryConfig(cell=cell, init=init, hidden=4), make("reber"))
        out, _ = model(torch.zeros(2, 5, dtype=torch.long))
        assert out.shape == (2, 5, 7)


def test_training_stops_when_the_full_test_passes(monkeypatch):
    calls = []

    def evaluate(self, model, n, generator, batch_size=256):
        calls.append(n)
        return Evaluation(0, n, 0.0)  # a model that is always right

    monkeypatch.setattr(type(make("adding", length=20)), "evaluate", evaluate)
    result = train(MemoryConfig(length=20, budget="10000", check_every=64, batch_size=16))
    assert result["solved"] and result["sequences_to_solve"] == 64
    assert calls == [256, 2560]  # the quick test, then the full one


def test_training_runs_out_of_budget_and_still_reports_a_full_test(monkeypatch):
    task = make("temporal-order-6a")
    monkeypatch.setattr(type(task), "test_size", 300)
    result = train(MemoryConfig(task="temporal-order-6a", budget="64", batch_size=32,
                                check_every=32, hidden=4))
    assert not result["solved"] and result["stopped"] == "budget"
    assert result["sequences_trained"] == 64 and result["test"]["total"] == 300
    assert result["paper_sequences"] == 31_390
    json.dumps(result)  # all of it is JSON-ready


def test_continual_training_carries_state_and_counts_strings(monkeypatch):
    short = ContinualReber(test_symbols=200)
    monkeypatch.setattr(memory.tasks, "make", lambda *args: short)
    result = train(MemoryConfig(task="reber-continual", budget="40", batch_size=4, hidden=4,
                                check_every=10_000))
    assert 40 <= result["sequences_trained"] < 60
    assert result["test"]["total"] == short.test_size * 200  # symbols
