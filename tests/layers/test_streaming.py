"""Stream equals batch: step by step, or chunk by chunk with the state carried, a layer gives
what one call on the whole sequence gives (evaluation mode), on every backend."""

from __future__ import annotations

import pytest
import torch
from support import parts
from tolerances import assert_close

import lstmkit

IN, H, T, B = 3, 4, 7, 2
F64 = torch.float64

CONFIGS = {  # name -> (class, options); the plain ones also run on the native backend
    "lstm": (lstmkit.LSTM, {}),
    "lstm_proj": (lstmkit.LSTM, {"proj_size": 2}),
    "gru": (lstmkit.GRU, {}),
    "rnn_tanh": (lstmkit.RNN, {}),
    "rnn_relu_nobias": (lstmkit.RNN, {"nonlinearity": "relu", "bias": False}),
    "lstm_peephole_coupled_clip": (lstmkit.LSTM, {"peephole": True, "coupled": True,
                                                  "cell_clip": 0.5}),
    "lstm_layer_norm_proj": (lstmkit.LSTM, {"layer_norm": True, "proj_size": 2}),
    "lstm_activations": (lstmkit.LSTM, {"gate_activation": "hard_sigmoid",
                                        "cell_activation": "softsign",
                                        "output_activation": "relu"}),
    "lstm_no_forget_gate": (lstmkit.LSTM, {"forget_gate": False, "output_gate": False}),
    "lstm_zoneout": (lstmkit.LSTM, {"zoneout": 0.3, "recurrent_dropout": 0.2}),
    "gru_reset_before_zoneout": (lstmkit.GRU, {"reset_after": False, "zoneout": 0.2}),
}
CASES = [pytest.param(backend, name, id=f"{backend}-{name}")
         for backend in ("reference", "native") for name, (cls, options) in CONFIGS.items()
         if backend == "reference" or name in ("lstm", "lstm_proj", "gru", "rnn_tanh",
                                               "rnn_relu_nobias")]


def make(name, backend, **layer_options):
    cls, options = CONFIGS[name]
    return cls(IN, H, num_layers=2, dtype=F64, backend=backend, **options, **layer_options).eval()


def assert_same_state(actual, expected):
    assert type(actual) is type(expected)
    for a, e in zip(parts(actual), parts(expected)):
        assert_close(a, e)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("backend, name", CASES)
def test_step_by_step_equals_one_call(backend, name, batch_first):
    layer = make(name, backend, batch_first=batch_first)
    x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=F64)
    hx = layer.family.make_state(*(torch.randn_like(t) for t in parts(layer.init_state(B))))
    y, state = layer(x, hx)
    streamed, carried = [], hx
    for t in range(T):
        y_t, carried = layer.step(x[:, t] if batch_first else x[t], carried)
        streamed.append(y_t)
    assert_close(torch.stack(streamed, dim=1 if batch_first else 0), y)
    assert_same_state(carried, state)


@pytest.mark.parametrize("backend, name", CASES)
def test_chunks_equal_one_call(backend, name):
    layer = make(name, backend)
    x = torch.randn(T, B, IN, dtype=F64)
    y, state = layer(x)
    chunks, carried = [], None
    for piece in x.split([3, 1, 3]):
        y_piece, carried = layer(piece, carried)
        chunks.append(y_piece)
    assert_close(torch.cat(chunks), y)
    assert_same_state(carried, state)


@pytest.mark.parametrize("backend, name", [c for c in CASES if c.values[1] in ("lstm_proj",
                                                                                "gru")])
def test_unbatched_steps_equal_one_call(backend, name):
    layer = make(name, backend)
    x = torch.randn(T, IN, dtype=F64)
    y, state = layer(x)
    carried, streamed = None, []
    for t in range(T):
        y_t, carried = layer.step(x[t], carried)
        assert y_t.shape == y.shape[1:]
        streamed.append(y_t)
    assert_close(torch.stack(streamed), y)
    assert_same_state(carried, state)


def test_bidirectional_step_raises_a_clear_error():
    layer = lstmkit.LSTM(IN, H, bidirectional=True)
    with pytest.raises(ValueError, match=r"step: expected a unidirectional layer.*bidirectional"):
        layer.step(torch.randn(B, IN))
