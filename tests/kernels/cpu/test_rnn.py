"""The fused Elman RNN (lstmkit/kernels/cpu/rnn.h) against the reference, tanh and relu."""

import pytest
import torch

from lstmkit import RNN
from lstmkit.cells.rnn import FAMILY
from lstmkit.config import cell_config
from lstmkit.kernels import cpu
from lstmkit.kernels.contract import StepMasks

IN, H = 3, 6
LENGTHS = torch.tensor([5, 1, 3])

OPTIONS = {
    "tanh": {},
    "relu": dict(nonlinearity="relu"),
    "relu, no bias": dict(nonlinearity="relu", bias=False),
    "recurrent dropout, zoneout": dict(recurrent_dropout=0.3, zoneout=0.2),
    "bidirectional, 2 layers": dict(bidirectional=True, num_layers=2, dropout=0.2),
}


def _make(options, hidden=H, inputs=IN):
    return lambda backend: RNN(inputs, hidden, backend=backend, **options)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_matches_reference(name, dtype, compare):
    compare(_make(OPTIONS[name]), dtype)
    compare(_make(OPTIONS[name]), dtype, lengths=LENGTHS)
    compare(_make(OPTIONS[name]), dtype, lengths=LENGTHS, training=False, grad=False)


@pytest.mark.parametrize("batch", [1, 9])
def test_wide_layers(batch, compare):
    make = _make({}, hidden=300, inputs=70)
    compare(make, steps=30, batch=batch)
    compare(make, steps=30, batch=batch, training=False, grad=False)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck_float64(nonlinearity):
    cfg = cell_config("rnn", 2, 3, nonlinearity=nonlinearity)
    steps, batch = 3, 2
    masks = StepMasks(torch.full((batch, 3), 1.25, dtype=torch.float64),
                      (torch.rand(steps, batch, 3, dtype=torch.float64),))

    def fn(x, h0, w_ih, w_hh, b_ih, b_hh):
        return cpu.scan(FAMILY, cfg, dict(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih,
                                              bias_hh=b_hh), x, h0,
                        torch.tensor([3, 2]), masks)

    shapes = [(steps, batch, 2), (batch, 3), (3, 2), (3, 3), (3,), (3,)]
    inputs = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(fn, inputs)
