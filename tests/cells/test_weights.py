"""Initialisation: torch.nn's draws by default, and the gate-bias options on the right rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lstmkit

IN, H = 3, 8
GATES = "ifgo"


def rows(gate: str, hidden: int = H) -> slice:
    k = GATES.index(gate)
    return slice(k * hidden, (k + 1) * hidden)


LAYER_PAIRS = {  # name -> (torch.nn module, lstmkit layer), each built from the same seed
    "lstm": (lambda: nn.LSTM(IN, H, 2, bidirectional=True),
             lambda: lstmkit.LSTM(IN, H, 2, bidirectional=True)),
    "lstm_proj_nobias": (lambda: nn.LSTM(IN, H, 2, bias=False, proj_size=3),
                         lambda: lstmkit.LSTM(IN, H, 2, bias=False, proj_size=3)),
    "gru": (lambda: nn.GRU(IN, H, 2, bidirectional=True),
            lambda: lstmkit.GRU(IN, H, 2, bidirectional=True)),
    "rnn": (lambda: nn.RNN(IN, H, 2, "relu"), lambda: lstmkit.RNN(IN, H, 2, "relu")),
    "lstm_cell": (lambda: nn.LSTMCell(IN, H), lambda: lstmkit.LSTMCell(IN, H)),
    "gru_cell": (lambda: nn.GRUCell(IN, H, bias=False),
                 lambda: lstmkit.GRUCell(IN, H, bias=False)),
    "rnn_cell": (lambda: nn.RNNCell(IN, H), lambda: lstmkit.RNNCell(IN, H)),
}


def seeded(build, seed: int = 7):
    torch.manual_seed(seed)
    return build()


@pytest.mark.parametrize("torch_build, kit_build", LAYER_PAIRS.values(), ids=LAYER_PAIRS.keys())
def test_default_init_draws_what_torch_nn_draws(torch_build, kit_build):
    expected, actual = seeded(torch_build).state_dict(), seeded(kit_build).state_dict()
    assert list(actual) == list(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_variant_tensors_init():
    layer = lstmkit.LSTM(IN, H, peephole=True, layer_norm=True)
    bound = 1 / math.sqrt(H)
    assert 0 < layer.weight_peephole_l0.abs().max() <= bound
    assert torch.all(layer.weight_ln_ih_l0 == 1) and torch.all(layer.weight_ln_hh_l0 == 1)
    assert torch.all(layer.weight_ln_c_l0 == 1) and torch.all(layer.bias_ln_c_l0 == 0)


def every_cell(layer: lstmkit.LSTM):
    """(bias_ih, bias_hh) of every layer and direction."""
    return [(w["bias_ih"], w["bias_hh"]) for cells in layer.cell_weights() for w in cells]


@pytest.mark.parametrize("options, expected", [
    ({"forget_bias": 3.0}, {"f": 3.0}),
    ({"input_bias": -3.0}, {"i": -3.0}),
    ({"forget_bias": 3.0, "input_bias": -3.0}, {"f": 3.0, "i": -3.0}),
    ({"forget_bias": 2.0, "coupled": True}, {"i": -2.0}),  # f = 1 - i = σ(-a_i)
    ({"input_bias": 1.5, "coupled": True}, {"i": 1.5}),
])
def test_gate_bias_options_set_their_rows_and_nothing_else(options, expected):
    torch_layer = seeded(lambda: nn.LSTM(IN, H, 2, bidirectional=True))
    layer = seeded(lambda: lstmkit.LSTM(IN, H, 2, bidirectional=True, **options))
    for (bias_ih, bias_hh), k in zip(every_cell(layer), range(4)):
        suffix = f"_l{k // 2}" + ("_reverse" if k % 2 else "")
        torch_ih = getattr(torch_layer, "bias_ih" + suffix)
        torch_hh = getattr(torch_layer, "bias_hh" + suffix)
        for gate in GATES:
            if gate in expected:  # the total bias is the value: bias_ih holds it, bias_hh 0
                assert torch.all(bias_ih[rows(gate)] == expected[gate])
                assert torch.all(bias_hh[rows(gate)] == 0)
            else:  # untouched: torch.nn's draws
                assert torch.equal(bias_ih[rows(gate)], torch_ih[rows(gate)])
                assert torch.equal(bias_hh[rows(gate)], torch_hh[rows(gate)])


def test_coupled_forget_bias_is_the_effective_forget_bias():
    """At zero weights a coupled cell's forget gate is σ(forget_bias)."""
    cell = lstmkit.LSTMCell(IN, H, coupled=True, forget_bias=2.0, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
        cell.bias_ih[rows("g")] = cell.bias_hh[rows("g")] = 0.0  # g = 0: c_t = f * c_{t-1}
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (IN, H, H))
    _, c_new = cell(x, (h, c))
    torch.testing.assert_close(c_new, torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)) * c)


@pytest.mark.parametrize("coupled", [False, True])
def test_chrono_draws_log_uniform_forget_biases_and_negates_them(coupled):
    t_max, hidden = 100, 500
    layer = lstmkit.LSTM(IN, hidden, 2, bidirectional=True, chrono=t_max, coupled=coupled)
    for bias_ih, bias_hh in every_cell(layer):
        i_rows, f_rows = rows("i", hidden), rows("f", hidden)
        assert torch.all(bias_hh[i_rows] == 0)
        forget = -bias_ih[i_rows]  # coupled: the input rows carry -forget, f = σ(forget)
        if not coupled:
            assert torch.all(bias_hh[f_rows] == 0)
            assert torch.equal(bias_ih[f_rows], forget)
        u = forget.exp()  # should be U[1, t_max - 1]
        assert 1.0 - 1e-5 <= u.min() and u.max() <= t_max - 1 + 1e-4
        assert abs(u.mean().item() - t_max / 2) < 5.0  # mean of U[1, 99]: 50 +- 1.3
        assert u.min() < 3 and u.max() > t_max - 3
    first, second = every_cell(layer)[:2]
    assert not torch.equal(first[0], second[0]), "each cell draws its own"


def test_reset_parameters_draws_again_with_the_options():
    layer = lstmkit.LSTM(IN, H, forget_bias=1.0)
    before = layer.weight_ih_l0.clone()
    layer.reset_parameters()
    assert not torch.equal(layer.weight_ih_l0, before)
    assert torch.all(layer.bias_ih_l0[rows("f")] == 1.0)
