"""The fused GRU (lstmkit/kernels/cpu/gru.h) against the reference, in both of its forms:
outputs, final states and every gradient, with lengths, masks, stacking and both directions."""

import pytest
import torch

from lstmkit import GRU
from lstmkit.cells.gru import FAMILY
from lstmkit.config import cell_config
from lstmkit.kernels import cpu
from lstmkit.kernels.contract import StepMasks

IN, H = 3, 6
LENGTHS = torch.tensor([5, 1, 3])

OPTIONS = {
    "reset after (torch.nn)": {},
    "reset before (Cho et al.)": dict(reset_after=False),
    "no bias": dict(bias=False),
    "reset before, no bias": dict(reset_after=False, bias=False),
    "recurrent dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.3),
    "reset before, dropout, zoneout": dict(reset_after=False, recurrent_dropout=0.3, zoneout=0.2),
    "bidirectional, 2 layers": dict(bidirectional=True, num_layers=2, dropout=0.2),
    "batch first": dict(batch_first=True),
}


def _make(options, hidden=H, inputs=IN):
    return lambda backend: GRU(inputs, hidden, backend=backend, **options)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_matches_reference(name, dtype, compare):
    compare(_make(OPTIONS[name]), dtype)
    compare(_make(OPTIONS[name]), dtype, lengths=LENGTHS)


@pytest.mark.parametrize("name", ["reset after (torch.nn)", "reset before, dropout, zoneout"])
def test_inference_without_saving(name, compare):
    compare(_make(OPTIONS[name]), lengths=LENGTHS, grad=False)
    compare(_make(OPTIONS[name]), training=False)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 9])
def test_wide_layers(reset_after, batch, compare):
    """Past matmul.h's blocks (see tests/kernels/cpu/test_lstm.py), float64 for the table."""
    make = _make(dict(reset_after=reset_after), hidden=90, inputs=300)
    compare(make, steps=30, batch=batch)
    compare(make, steps=30, batch=batch, training=False, grad=False)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gradcheck_float64(reset_after):
    cfg = cell_config("gru", 2, 3, reset_after=reset_after)
    steps, batch = 3, 2
    masks = StepMasks(torch.full((batch, 3), 1.25, dtype=torch.float64),
                      (torch.rand(steps, batch, 3, dtype=torch.float64),))

    def fn(x, h0, w_ih, w_hh, b_ih, b_hh):
        y, h = cpu.scan(FAMILY, cfg, dict(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih,
                                              bias_hh=b_hh), x, h0,
                        torch.tensor([3, 2]), masks)
        return y, h

    shapes = [(steps, batch, 2), (batch, 3), (9, 2), (9, 3), (9,), (9,)]
    inputs = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(fn, inputs)
