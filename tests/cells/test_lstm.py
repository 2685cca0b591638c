"""The LSTM cell: torch.nn parity, gradcheck of every option, and the equations of the variants
that ONNX Runtime does not cover (layer norm, gate ablations)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from support import assert_same_gradients, gradients, probe_loss
from tolerances import assert_close
from torch import nn

from lstmkit import LSTMCell, LSTMState
from lstmkit.activations import ACTIVATIONS
from lstmkit.cells.lstm import lstm_input, lstm_step
from lstmkit.config import CellConfig

IN, H, P, B = 3, 4, 2, 2
F64 = torch.float64


def cell_pair(bias: bool):
    reference = nn.LSTMCell(IN, H, bias, dtype=F64)
    cell = LSTMCell(IN, H, bias, dtype=F64)
    cell.load_state_dict(reference.state_dict())
    return reference, cell


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(B,), ()], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False])
def test_cell_matches_torch_nn(bias, batch, with_state):
    reference, cell = cell_pair(bias)
    x = torch.randn(batch + (IN,), dtype=F64, requires_grad=True)
    state = tuple(torch.randn(batch + (H,), dtype=F64, requires_grad=True) for _ in "hc")
    expected = reference(x, state if with_state else None)
    actual = cell(x, state if with_state else None)
    assert isinstance(actual, LSTMState)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    named = {"x": x} | ({"h": state[0], "c": state[1]} if with_state else {})
    assert_same_gradients(gradients(probe_loss(*actual), named | dict(cell.named_parameters())),
                          gradients(probe_loss(*expected),
                                    named | dict(reference.named_parameters())), F64)


OPTIONS = {
    "plain": {},
    "nobias": {"bias": False},
    "peephole": {"peephole": True},
    "coupled": {"coupled": True},
    "cell_clip": {"cell_clip": 0.5},
    "layer_norm": {"layer_norm": True},
    "proj": {"proj_size": P},
    "no_input_gate": {"input_gate": False},
    "no_forget_gate": {"forget_gate": False},
    "no_output_gate": {"output_gate": False},
    **{f"act_{name}": {"gate_activation": name, "cell_activation": name,
                       "output_activation": name} for name in ACTIVATIONS},
    "mixed_activations": {"gate_activation": "hard_sigmoid", "cell_activation": "relu",
                          "output_activation": "softsign"},
    "peephole_coupled_clip": {"peephole": True, "coupled": True, "cell_clip": 0.5},
    "everything": {"peephole": True, "coupled": True, "cell_clip": 1.0, "layer_norm": True,
                   "proj_size": P, "gate_activation": "hard_sigmoid"},
    "ln_proj_peephole_nobias": {"layer_norm": True, "proj_size": P, "peephole": True,
                                "bias": False},
}


def step_function(config: CellConfig, names: list[str]):
    """(x, h, c, *parameters) -> (h, c): one step as a function of all its tensors."""

    def step(x, h, c, *params):
        w = dict(zip(names, params))
        return tuple(lstm_step(lstm_input(x, w, config), LSTMState(h, c), w, config))

    return step


def perturbed(cell: nn.Module) -> dict[str, torch.Tensor]:
    """The cell's parameters, with the layer-norm ones moved off their 1/0 initialisation."""
    return {name: (p.detach() + 0.3 * torch.randn_like(p) if "ln" in name else p.detach())
            .requires_grad_() for name, p in cell.named_parameters()}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_gradcheck_every_option(options):
    cell = LSTMCell(IN, H, dtype=F64, **options)
    params = perturbed(cell)
    x = torch.randn(B, IN, dtype=F64, requires_grad=True)
    h = torch.randn(B, cell.config.output_size, dtype=F64, requires_grad=True)
    c = torch.randn(B, H, dtype=F64, requires_grad=True)
    step = step_function(cell.config, list(params))
    assert torch.autograd.gradcheck(step, (x, h, c, *params.values()))


def ln(v, gain, shift=0.0):
    """Layer normalisation written out, independently of torch.nn.functional.layer_norm."""
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return gain * (v - mean) / torch.sqrt(var + 1e-5) + shift


def test_layer_norm_follows_the_docstring_equations():
    cell = LSTMCell(IN, H, dtype=F64, layer_norm=True, proj_size=P)
    w = perturbed(cell)
    n = SimpleNamespace(**w)
    x, h, c = (torch.randn(B, n, dtype=F64) for n in (IN, P, H))
    a = ln(x @ n.weight_ih.t(), n.weight_ln_ih) + ln(h @ n.weight_hh.t(), n.weight_ln_hh)
    i, f, g, o = (a + n.bias_ih + n.bias_hh).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = (torch.sigmoid(o) * torch.tanh(ln(c_new, n.weight_ln_c, n.bias_ln_c))) @ n.weight_hr.t()
    state = lstm_step(lstm_input(x, w, cell.config), LSTMState(h, c), w, cell.config)
    assert_close(state.h, h_new)
    assert_close(state.c, c_new)  # the carried state is the un-normalised c


@pytest.mark.parametrize("gate", ["input", "forget", "output"])
def test_removed_gate_equals_a_saturated_one(gate):
    """Removing a gate fixes it to 1: the same as a plain cell whose gate bias is huge."""
    ablated = LSTMCell(IN, H, dtype=F64, **{f"{gate}_gate": False})
    plain = LSTMCell(IN, H, dtype=F64)
    plain.load_state_dict(ablated.state_dict())
    rows = slice("ifgo".index(gate[0]) * H, ("ifgo".index(gate[0]) + 1) * H)
    with torch.no_grad():
        plain.bias_ih[rows] = 1e3  # sigmoid(1e3) is exactly 1.0 in float64
    x = torch.randn(B, IN, dtype=F64)
    state = (torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64))
    for a, e in zip(ablated(x, state), plain(x, state)):
        assert_close(a, e)


@pytest.mark.parametrize("options, gate", [({"coupled": True}, "f"), ({"input_gate": False}, "i"),
                                           ({"forget_gate": False}, "f"),
                                           ({"output_gate": False}, "o")])
def test_unused_gate_rows_get_no_gradient(options, gate):
    cell = LSTMCell(IN, H, dtype=F64, peephole=True, **options)
    loss = probe_loss(*cell(torch.randn(B, IN, dtype=F64), (torch.randn(B, H, dtype=F64),
                                                            torch.randn(B, H, dtype=F64))))
    loss.backward()
    k = "ifgo".index(gate)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        grad = getattr(cell, name).grad
        assert torch.all(grad[k * H:(k + 1) * H] == 0), name
        assert grad.abs().sum() > 0, name
    peephole_rows = {"i": 0, "f": 1, "o": 2}[gate]
    assert torch.all(cell.weight_peephole.grad[peephole_rows * H:(peephole_rows + 1) * H] == 0)


def test_coupled_forget_gate_is_one_minus_input_gate():
    """With zero weights every pre-activation is its bias: f = 1 - σ(b_i), whatever b_f is."""
    cell = LSTMCell(IN, H, dtype=F64, coupled=True)
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
        cell.bias_ih[:H] = 0.7   # i
        cell.bias_ih[H:2 * H] = 5.0  # f rows: unused
        cell.bias_ih[2 * H:3 * H] = 10.0  # g = tanh(10) ~ 1
    c = torch.randn(B, H, dtype=F64)
    _, c_new = cell(torch.zeros(B, IN, dtype=F64), (torch.zeros(B, H, dtype=F64), c))
    i = 1 / (1 + math.exp(-0.7))
    assert_close(c_new, (1 - i) * c + i * math.tanh(10.0))
