"""lstmkit's layers equal torch.nn's with the same weights: outputs, final states and gradients
(w.r.t. input, initial state and every parameter), on every backend that runs torch.nn's
configurations, over a pruned product of the options."""

from __future__ import annotations

import itertools

import pytest
import torch
from support import assert_same_gradients, gradients, parts, probe_loss
from tolerances import assert_close
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit

IN, H, P, T, B = 3, 4, 2, 5, 3
LENGTHS = torch.tensor([3, 5, 1])  # unsorted, one full, one of a single step

MODES = {  # name -> (torch class, lstmkit class, extra constructor arguments)
    "lstm": (nn.LSTM, lstmkit.LSTM, {}),
    "lstm_proj": (nn.LSTM, lstmkit.LSTM, {"proj_size": P}),
    "gru": (nn.GRU, lstmkit.GRU, {}),
    "rnn_tanh": (nn.RNN, lstmkit.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, lstmkit.RNN, {"nonlinearity": "relu"}),
}
# num_layers, batch_first and bias only meet at the layer boundary: a two-level orthogonal array
# (every pair of their values appears once) covers their interactions in 4 rows instead of 8.
SHAPES = [(1, False, True), (1, True, False), (2, False, False), (2, True, True)]
KINDS = ("full", "packed", "lengths")

CASES = [
    pytest.param(mode, layers, bidirectional, batch_first, bias, kind,
                 id=f"{mode}-L{layers}-{'bi' if bidirectional else 'uni'}-"
                    f"{'bf' if batch_first else 'tf'}-{'bias' if bias else 'nobias'}-{kind}")
    for mode, (layers, batch_first, bias), bidirectional, kind
    in itertools.product(MODES, SHAPES, (False, True), KINDS)
]


def make_pair(mode: str, backend: str, dtype=torch.float64, **options):
    """A torch.nn module and the lstmkit layer with its weights."""
    torch_class, kit_class, extra = MODES[mode]
    reference = torch_class(IN, H, **extra, **options, dtype=dtype)
    layer = kit_class(IN, H, **extra, **options, dtype=dtype, backend=backend)
    layer.load_state_dict(reference.state_dict())
    return reference, layer


def initial_state(module: nn.RNNBase, dtype, batch: tuple[int, ...] = (B,)):
    """A random initial state of the module's shape, requiring grad."""
    leading = (module.num_layers * (2 if module.bidirectional else 1),) + batch
    h = torch.randn(leading + (module.proj_size or module.hidden_size,), dtype=dtype)
    if isinstance(module, nn.LSTM):
        return h.requires_grad_(), torch.randn(leading + (H,), dtype=dtype).requires_grad_()
    return h.requires_grad_()


def run(module, x, hx, kind: str, batch_first: bool, lstmkit_layer: bool):
    """(output tensor, final state) for one kind of input."""
    if kind == "full":
        return module(x, hx)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    if kind == "lengths" and lstmkit_layer:
        return module(x, hx, lengths=LENGTHS)
    y, state = module(packed, hx)
    if kind == "lengths":  # torch.nn's padded output is the packed one, zero-padded
        return pad_packed_sequence(y, batch_first=batch_first, total_length=T)[0], state
    assert torch.equal(y.batch_sizes, packed.batch_sizes)
    assert torch.equal(y.sorted_indices, packed.sorted_indices)
    assert torch.equal(y.unsorted_indices, packed.unsorted_indices)
    return y.data, state


def assert_matches_torch(reference, layer, x, hx, kind="full", batch_first=False):
    dtype = x.dtype
    expected_y, expected_state = run(reference, x, hx, kind, batch_first, False)
    actual_y, actual_state = run(layer, x, hx, kind, batch_first, True)
    assert_close(actual_y, expected_y, dtype, msg="output")
    assert isinstance(actual_state, torch.Tensor) == isinstance(expected_state, torch.Tensor)
    for name, a, e in zip("hc", parts(actual_state), parts(expected_state)):
        assert_close(a, e, dtype, msg=f"final {name}")
    inputs = {"input": x} | {f"hx[{k}]": t for k, t in enumerate(parts(hx))}
    expected = gradients(probe_loss(expected_y, *parts(expected_state)),
                         inputs | dict(reference.named_parameters()))
    actual = gradients(probe_loss(actual_y, *parts(actual_state)),
                       inputs | dict(layer.named_parameters()))
    assert_same_gradients(actual, expected, dtype)


@pytest.mark.parametrize("mode, num_layers, bidirectional, batch_first, bias, kind", CASES)
def test_layer_matches_torch_nn(backend, mode, num_layers, bidirectional, batch_first, bias,
                                kind):
    reference, layer = make_pair(mode, backend, num_layers=num_layers, bias=bias,
                                 batch_first=batch_first, bidirectional=bidirectional)
    x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=torch.float64)
    assert_matches_torch(reference, layer, x.requires_grad_(), initial_state(reference, x.dtype),
                         kind, batch_first)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_input_matches_torch_nn(backend, mode, bidirectional):
    reference, layer = make_pair(mode, backend, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(T, IN, dtype=torch.float64, requires_grad=True)
    assert_matches_torch(reference, layer, x, initial_state(reference, x.dtype, batch=()))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_torch_nn(backend, mode, kind):
    reference, layer = make_pair(mode, backend, dtype=torch.float32, num_layers=2,
                                 bidirectional=True)
    x = torch.randn(T, B, IN, requires_grad=True)
    assert_matches_torch(reference, layer, x, initial_state(reference, x.dtype), kind)


def test_default_state_is_zeros(backend):
    reference, layer = make_pair("lstm_proj", backend, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    zeros = tuple(torch.zeros_like(t) for t in parts(initial_state(reference, x.dtype)))
    for state in (None, zeros):
        y, (h, c) = layer(x, state)
        y_torch, (h_torch, c_torch) = reference(x)
        assert_close(y, y_torch)
        assert_close(h, h_torch)
        assert_close(c, c_torch)
