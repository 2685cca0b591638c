"""The int8 scans (lstmkit/kernels/cpu/quant.h) against the float64 truth of what they claim to
compute: the float layer with the dequantised weights, for every LSTM variant, both GRU forms
and both RNN nonlinearities, through both of the kernel's product paths (a call of at most 4
rows in all, T * B, dots the int8 rows; a larger one runs the dequantised float products), with
lengths, zoneout, stacking and both directions."""

import copy

import pytest
import torch
from support import parts
from tolerances import assert_conforms

from lstmkit import GRU, LSTM, RNN
from lstmkit.kernels.contract import StepMasks
from lstmkit.kernels.cpu import quant
from lstmkit.layers.quantized import dequantized, quantize_dynamic

IN, H = 5, 7
SHAPES = [(1, 1), (2, 2), (1, 4), (6, 1), (6, 5)]  # (T, B): int8 rows, then dequantised

LSTM_OPTIONS = {
    "plain": {},
    "no bias": dict(bias=False),
    "peephole": dict(peephole=True),
    "coupled, clip": dict(coupled=True, cell_clip=0.5),
    "layer norm": dict(layer_norm=True),
    "projection": dict(proj_size=4),
    "layer norm, peephole, projection": dict(layer_norm=True, peephole=True, proj_size=4),
    "no input gate, no output gate": dict(input_gate=False, output_gate=False),
    "no forget gate": dict(forget_gate=False),
    "activations": dict(gate_activation="hard_sigmoid", cell_activation="softsign",
                        output_activation="elu"),
}
LAYER_OPTIONS = {
    "zoneout": dict(zoneout=0.3, peephole=True),
    "bidirectional, 2 layers, projection": dict(bidirectional=True, num_layers=2, proj_size=3),
    "batch first": dict(batch_first=True, layer_norm=True),
}
OTHERS = {
    "gru": (GRU, {}), "gru reset before": (GRU, dict(reset_after=False)),
    "gru no bias, 2 layers": (GRU, dict(bias=False, num_layers=2)),
    "rnn tanh": (RNN, {}), "rnn relu, bidirectional": (RNN, dict(nonlinearity="relu",
                                                                   bidirectional=True)),
}


def _float64_truth(layer, int8) -> torch.nn.Module:
    """``layer`` (on the reference backend) in float64 with ``int8``'s dequantised weights."""
    truth = copy.deepcopy(layer).double()
    for k, row in enumerate(int8.cell_weights()):
        for d, w in enumerate(row):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            for name, t in dequantized(w, torch.float64).items():
                getattr(truth, name + suffix).data.copy_(t)
    return truth


def _check(cls, options, shape, lengths=False):
    steps, batch = shape
    lengths = torch.tensor([steps, 1, steps, 1, steps][:batch]) if lengths else None
    layer = cls(IN, H, backend="reference", **options).eval()
    int8 = quantize_dynamic(layer, backend="cpu")
    reference = quantize_dynamic(layer, backend="reference")
    truth = _float64_truth(layer, int8)
    assert int8.backend().name == "cpu"
    x = torch.randn(batch, steps, IN) if layer.batch_first else torch.randn(steps, batch, IN)
    hx = tuple(0.5 * torch.randn_like(h) for h in parts(layer.init_state(batch)))
    hx = hx if len(hx) > 1 else hx[0]
    hx64 = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()
    with torch.no_grad():
        expected = _flat(truth(x.double(), hx64, lengths=lengths))
        ref = _flat(reference(x, hx, lengths=lengths))
        actual = _flat(int8(x, hx, lengths=lengths))
    width = IN + H * (1 + layer.bidirectional)  # the widest sum in one step
    for name, a, e, r in zip(("y", "h", "c"), actual, expected, ref):
        assert_conforms(a, e, r, torch.float32, steps * width, msg=name)


def _flat(out):
    y, state = out
    return [y, *parts(state)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LSTM_OPTIONS)
def test_lstm_variants_compute_the_dequantised_layer(name, shape):
    _check(LSTM, LSTM_OPTIONS[name], shape)


@pytest.mark.parametrize("shape", [(2, 2), (6, 5)])
@pytest.mark.parametrize("name", LAYER_OPTIONS)
def test_lstm_layer_features(name, shape):
    _check(LSTM, LAYER_OPTIONS[name], shape, lengths=True)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", OTHERS)
def test_gru_and_rnn_compute_the_dequantised_layer(name, shape):
    cls, options = OTHERS[name]
    _check(cls, options, shape, lengths=True)


def test_long_sequence_crosses_input_chunks():
    # chunk_steps(B * G) steps share one input product; 3,000 steps at B=1, H=7 span several.
    layer = LSTM(IN, H, peephole=True, backend="reference").eval()
    int8, reference = quantize_dynamic(layer, backend="cpu"), quantize_dynamic(layer, "reference")
    truth = _float64_truth(layer, int8)
    x = torch.randn(3000, 1, IN)
    with torch.no_grad():
        actual, ref, expected = int8(x)[0], reference(x)[0], truth(x.double())[0]
    assert_conforms(actual, expected, ref, torch.float32, 3000 * (IN + H), msg="y")


def test_refuses_what_it_does_not_compute():
    int8 = quantize_dynamic(LSTM(IN, H), backend="reference")
    assert "float32" in quant.BACKEND.supports(int8.config, torch.device("cpu"), torch.float64)
    state = int8.family.make_state(torch.zeros(1, H), torch.zeros(1, H))
    with pytest.raises(ValueError, match="recurrent-dropout"):
        quant.scan(int8.family, int8.config.cell, int8.cell_weights()[0][0],
                   torch.randn(2, 1, IN), state, None, StepMasks(hidden=torch.ones(1, H)))
