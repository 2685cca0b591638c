"""Layers under torch.autocast (lstmkit/_autocast.py) and the xLSTM layers in 16 bits.

Under autocast a float32 layer must compute exactly what the same layer cast to the autocast
dtype computes, forward and gradients, and take the 16-bit activations autocast's own ops hand
it; these are bit-for-bit comparisons of one computation done two ways, so they hold on any
CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from support import parts
from tolerances import assert_close

import lstmkit
from lstmkit.apps.precision import SixteenBit
from lstmkit.layers.xlstm_blocks import xLSTMConfig
from lstmkit.models import ModelConfig, SequenceModel

LOW = [torch.bfloat16, torch.float16]
LAYERS = {
    "lstm": lambda: lstmkit.LSTM(6, 8, num_layers=2),
    "lstm variants": lambda: lstmkit.LSTM(6, 8, peephole=True, proj_size=5, bidirectional=True),
    "gru": lambda: lstmkit.GRU(6, 8, reset_after=False),
    "rnn": lambda: lstmkit.RNN(6, 8),
    "slstm": lambda: lstmkit.sLSTM(6, 8, num_heads=2),
    "mlstm": lambda: lstmkit.mLSTM(6, 8, num_heads=2),
}


def _ids(dtype):
    return str(dtype).replace("torch.", "")


def _grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("dtype", LOW, ids=_ids)
@pytest.mark.parametrize("name", LAYERS)
def test_a_float32_layer_under_autocast_is_the_layer_in_its_dtype(name, dtype):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    low = copy.deepcopy(layer).to(dtype)
    project = torch.nn.Linear(6, 6)
    x = torch.randn(7, 3, 6)
    with torch.autocast("cpu", dtype=dtype):
        inputs = project(x)  # the 16-bit activations autocast's Linear hands on
        assert inputs.dtype == dtype
        y, state = layer(inputs, lengths=torch.tensor([7, 4, 2]))
    expected_y, expected_state = low(inputs.detach(), lengths=torch.tensor([7, 4, 2]))
    assert y.dtype == dtype
    assert torch.equal(y, expected_y)
    for got, want in zip(parts(state), parts(expected_state)):
        assert got.dtype == want.dtype and torch.equal(got, want)
    (y.float() ** 2).sum().backward()
    (expected_y.float() ** 2).sum().backward()
    for (key, param), (_, low_param) in zip(layer.named_parameters(), low.named_parameters()):
        assert param.grad.dtype == torch.float32, key  # the master weights keep float32 grads
        assert torch.equal(param.grad, low_param.grad.float()), key


@pytest.mark.parametrize("name", ["lstm", "gru", "slstm"])
def test_steps_under_autocast_are_the_16_bit_layers_steps(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    low = copy.deepcopy(layer).to(torch.bfloat16)
    x = torch.randn(5, 2, 6)
    with torch.no_grad():
        expected, state = [], None
        for t in range(5):
            y_t, state = low.step(x[t].bfloat16(), state)
            expected.append(y_t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, state = [], None
            for t in range(5):  # float32 or bfloat16 inputs alike
                y_t, state = layer.step(x[t].bfloat16() if t % 2 else x[t], state)
                got.append(y_t)
    assert torch.equal(torch.stack(got), torch.stack(expected))


def test_other_dtypes_and_int8_layers_are_left_to_their_own():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6)
    double = lstmkit.LSTM(6, 8, dtype=torch.float64)
    int8 = lstmkit.quantize_dynamic(lstmkit.LSTM(6, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert double(x.double())[0].dtype == torch.float64
        got = int8(x.bfloat16())[0]
    assert got.dtype == torch.float32  # int8 layers compute in float32
    assert torch.equal(got, int8(x.bfloat16().float())[0])
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="float64"):
        lstmkit.LSTM(6, 8)(x.double())  # autocast leaves float64, and the check names it


@pytest.mark.parametrize("name", ["slstm", "mlstm"])
def test_xlstm_layers_run_in_16_bits_with_a_float32_state_carried_exactly(name):
    """A bfloat16 sLSTM or mLSTM layer refused its own zero state before (it made it in
    bfloat16; the scans keep it in float32). Chunks then equal one call to the rounding of the
    outputs (16-bit) and of the float32 state."""
    torch.manual_seed(0)
    layer = LAYERS[name]().to(torch.bfloat16)
    x = torch.randn(6, 2, 6, dtype=torch.bfloat16)
    y, state = layer(x)
    assert y.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in state)
    y1, s1 = layer(x[:4])
    y2, s2 = layer(x[4:], s1)
    assert_close(torch.cat([y1, y2]), y, torch.bfloat16)
    for a, b in zip(s2, state):  # float32: the mLSTM's chunks sum in another order
        assert_close(a, b, torch.float32)


def test_an_xlstm_model_trains_in_16_bits_with_its_state_carried():
    """``--precision bf16`` with ``--model.cell xlstm`` failed at its second batch: the state it
    carries came back through the 16-bit cast, and the blocks refused a bfloat16 state."""
    torch.manual_seed(0)
    config = ModelConfig(xLSTMConfig.from_pattern(16, "mLSTM:sLSTM 1:1", 2, input_size=6), 4)
    model = SequenceModel(config)
    wrapped = SixteenBit(model, torch.bfloat16)
    x = torch.randn(2, 6, 6)
    y1, state = wrapped(x[:, :3])
    y2, _ = wrapped(x[:, 3:], state)
    exact = SequenceModel(config).double()
    exact.load_state_dict(model.state_dict())
    truth = exact(x.double())[0]
    assert (torch.cat([y1, y2], 1).double() - truth).abs().max() < 0.1 * truth.abs().max()
    y2.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters() if p.requires_grad)


def test_an_xlstm_stack_runs_under_autocast():
    """It refused autocast's bfloat16 activations ("expected dtype float32")."""
    torch.manual_seed(0)
    stack = lstmkit.xLSTM(xLSTMConfig.from_pattern(16, "mLSTM:sLSTM 1:1", 2, input_size=6))
    project = torch.nn.Linear(6, 6)
    x = torch.randn(2, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = stack(project(x))
    exact = stack(project(x))[0]
    assert (y.float() - exact).abs().max() < 0.05 * exact.abs().max()
