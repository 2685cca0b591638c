"""The GRU cell: torch.nn parity, gradcheck of both forms, and the paper's form written out."""

from __future__ import annotations

import pytest
import torch
from support import assert_same_gradients, gradients, probe_loss
from tolerances import assert_close
from torch import nn

from lstmkit import GRUCell
from lstmkit.cells.gru import gru_input, gru_step

IN, H, B = 3, 4, 2
F64 = torch.float64


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(B,), ()], ids=["batched", "unbatched"])
def test_cell_matches_torch_nn(bias, batch):
    reference = nn.GRUCell(IN, H, bias, dtype=F64)
    cell = GRUCell(IN, H, bias, dtype=F64)
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


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(reset_after, bias):
    cell = GRUCell(IN, H, bias, dtype=F64, reset_after=reset_after)
    params = {n: p.detach().requires_grad_() for n, p in cell.named_parameters()}

    def step(x, h, *tensors):
        w = dict(zip(params, tensors))
        return gru_step(gru_input(x, w, cell.config), h, w, cell.config)

    x = torch.randn(B, IN, dtype=F64, requires_grad=True)
    h = torch.randn(B, H, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(step, (x, h, *params.values()))


def test_reset_before_follows_the_paper():
    """reset_after=False: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), Cho et al.'s form."""
    cell = GRUCell(IN, H, dtype=F64, reset_after=False)
    x, h = torch.randn(B, IN, dtype=F64), torch.randn(B, H, dtype=F64)
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b = (cell.bias_ih + cell.bias_hh).chunk(3)
    b_in, b_hn = cell.bias_ih.chunk(3)[2], cell.bias_hh.chunk(3)[2]
    r = torch.sigmoid(x @ w_ir.t() + h @ w_hr.t() + b[0])
    z = torch.sigmoid(x @ w_iz.t() + h @ w_hz.t() + b[1])
    n = torch.tanh(x @ w_in.t() + b_in + (r * h) @ w_hn.t() + b_hn)
    assert_close(cell(x, h), (1 - z) * n + z * h)
    after = GRUCell(IN, H, dtype=F64)
    after.load_state_dict(cell.state_dict())
    assert not torch.allclose(after(x, h), cell(x, h))
