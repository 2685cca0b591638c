"""The Elman cell: torch.nn parity and gradcheck, tanh and relu."""

from __future__ import annotations

import pytest
import torch
from support import assert_same_gradients, gradients, probe_loss
from tolerances import assert_close
from torch import nn

from lstmkit import RNNCell
from lstmkit.cells.rnn import rnn_input, rnn_step

IN, H, B = 3, 4, 2
F64 = torch.float64


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(B,), ()], ids=["batched", "unbatched"])
def test_cell_matches_torch_nn(nonlinearity, bias, batch):
    reference = nn.RNNCell(IN, H, bias, nonlinearity, dtype=F64)
    cell = RNNCell(IN, H, bias, nonlinearity, dtype=F64)
    cell.load_state_dict(reference.state_dict())
    x = torch.randn(batch + (IN,), dtype=F64, requires_grad=True)
    h = torch.randn(batch + (H,), dtype=F64, requires_grad=True)
    expected, actual = reference(x, h), cell(x, h)
    assert_close(actual, expected)
    assert_close(cell(x), reference(x))
    named = {"x": x, "h": h}
    assert_same_gradients(gradients(probe_loss(actual), named | dict(cell.named_parameters())),
                          gradients(probe_loss(expected),
                                    named | dict(reference.named_parameters())), F64)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck(nonlinearity):
    cell = RNNCell(IN, H, nonlinearity=nonlinearity, dtype=F64)
    params = {n: p.detach().requires_grad_() for n, p in cell.named_parameters()}

    def step(x, h, *tensors):
        w = dict(zip(params, tensors))
        return rnn_step(rnn_input(x, w, cell.config), h, w, cell.config)

    x = torch.randn(B, IN, dtype=F64, requires_grad=True)
    h = torch.randn(B, H, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (x, h, *params.values()))
