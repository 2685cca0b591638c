"""What layers own: lengths, direction, stacking, dropout, recurrent dropout and zoneout."""

from __future__ import annotations

import pytest
import torch
from support import assert_same_gradients, gradients, parts, probe_loss
from tolerances import assert_close
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.layers import RecurrentLayer

IN, H, T, B = 3, 4, 6, 4
F64 = torch.float64
LENGTHS = torch.tensor([4, 6, 1, 3])

LAYERS = {  # name -> (class, constructor options)
    "lstm": (lstmkit.LSTM, {}),
    "lstm_proj": (lstmkit.LSTM, {"proj_size": 2}),
    "lstm_variant": (lstmkit.LSTM, {"peephole": True, "layer_norm": True, "coupled": True,
                                    "proj_size": 2, "cell_clip": 2.0}),
    "gru": (lstmkit.GRU, {}),
    "gru_reset_before": (lstmkit.GRU, {"reset_after": False}),
    "rnn_relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
    "gru_zoneout": (lstmkit.GRU, {"zoneout": 0.25}),  # evaluation: deterministic
}
PLAIN = ("lstm", "lstm_proj", "gru", "rnn_relu")  # torch.nn's: these run on both backends


def backend_cases(names) -> list[tuple[str, str]]:
    """(backend, layer name): the reference runs all, native only torch.nn's configurations."""
    return [(b, n) for b in ("reference", "native") for n in names
            if b == "reference" or n in PLAIN]


def make(name: str, backend: str = "reference", **options) -> RecurrentLayer:
    cls, extra = LAYERS[name]
    return cls(IN, H, dtype=F64, backend=backend, **extra, **options)


def random_state(layer, batch: int = B):
    """A random initial state of the layer's state type and shape."""
    return layer.family.make_state(*(torch.randn_like(t) for t in parts(layer.init_state(batch))))


PAST = torch.arange(T)[:, None] >= LENGTHS[None, :]  # (T, B): True past each length


def padded(fill: float) -> torch.Tensor:
    """(T, B, IN) random where valid, ``fill`` past each length."""
    return torch.randn(T, B, IN, dtype=F64).masked_fill(PAST[..., None], fill)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("backend, name", backend_cases(LAYERS))
def test_lengths_equal_each_sequence_alone(backend, name, bidirectional):
    """Each sequence of a padded batch gives what it gives alone, unpadded: the reverse
    direction starts at its own last element, and its final state is taken there."""
    layer = make(name, backend, num_layers=2, bidirectional=bidirectional).eval()
    x, hx = padded(0.5), random_state(layer)
    y, state = layer(x, hx, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        alone_hx = layer.family.make_state(*(t[:, b:b + 1] for t in parts(hx)))
        y_alone, state_alone = layer(x[:n, b:b + 1], alone_hx)
        assert_close(y[:n, b:b + 1], y_alone)
        assert torch.all(y[n:, b] == 0), "output past the length must be zero"
        for final, final_alone in zip(parts(state), parts(state_alone)):
            assert_close(final[:, b:b + 1], final_alone)


def test_lengths_of_any_integer_dtype_give_the_same_result():
    layer = make("lstm_variant", bidirectional=True)
    x = torch.randn(T, B, IN, dtype=F64)
    y, _ = layer(x, lengths=LENGTHS)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(layer(x, lengths=LENGTHS.to(dtype))[0], y)


@pytest.mark.parametrize("fill", [1e6, float("nan"), float("inf")])
@pytest.mark.parametrize("backend, name", backend_cases(["lstm_variant", "gru"]))
def test_padding_values_never_reach_outputs_states_or_gradients(backend, name, fill):
    layer = make(name, backend, bidirectional=True)
    x, hx = padded(0.0), random_state(layer)
    results = []
    for value in (0.0, fill):
        x_filled = x.masked_fill(PAST[..., None], value).requires_grad_()
        y, state = layer(x_filled, hx, lengths=LENGTHS)
        named = {"x": x_filled} | dict(layer.named_parameters())
        results.append((y, parts(state), gradients(probe_loss(y, *parts(state)), named)))
    (y0, s0, g0), (y1, s1, g1) = results
    assert_close(y1, y0)
    for a, e in zip(s1, s0):
        assert_close(a, e)
    assert_same_gradients(g1, g0, F64)


@pytest.mark.parametrize("name", PLAIN)
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_and_packed_sequences_agree_across_backends(name, batch_first):
    """Reference and native, with lengths= and with a PackedSequence, all give one answer;
    lengths shorter than the padded T leave zero rows at the end."""
    lengths = torch.tensor([4, 5, 1, 3])  # max 5 < T
    x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=F64, requires_grad=True)
    layers = [make(name, backend, num_layers=2, bidirectional=True, batch_first=batch_first)
              for backend in ("reference", "native")]
    layers[1].load_state_dict(layers[0].state_dict())
    results = []
    for layer in layers:
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        for y, state in (layer(x, lengths=lengths), layer(packed)):
            if not isinstance(y, torch.Tensor):
                y = pad_packed_sequence(y, batch_first=batch_first, total_length=T)[0]
            grads = gradients(probe_loss(y, *parts(state)),
                              {"x": x} | dict(layer.named_parameters()))
            results.append((y, parts(state), grads))
    expected_y, expected_state, expected_grads = results[0]
    for y, state, grads in results[1:]:
        assert_close(y, expected_y)
        for a, e in zip(state, expected_state):
            assert_close(a, e)
        assert_same_gradients(grads, expected_grads, F64)
    assert torch.all((expected_y.transpose(0, 1) if batch_first else expected_y)[5:] == 0)


def test_recurrent_dropout_mask_is_one_per_sequence_and_constant_over_time():
    """An RNN that only carries h through its dropped-out copy exposes the mask: with W_hh = 1,
    zero input weights and h_0 = 1, h_t = m ⊙ h_{t-1} = m^t. A fresh mask per step would leave
    about 2^-t of the units alive; one mask keeps the same units, each 2^t (inverted dropout)."""
    layer = lstmkit.RNN(H, 16, nonlinearity="relu", dtype=F64, recurrent_dropout=0.5)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        layer.weight_hh_l0.copy_(torch.eye(16))
    y, _ = layer(torch.randn(T, 8, H, dtype=F64), torch.ones(1, 8, 16, dtype=F64))
    kept = y[0] != 0  # (B, 16)
    assert 0 < kept.float().mean() < 1
    assert set(y[0].unique().tolist()) == {0.0, 2.0}
    for t in range(T):
        assert torch.equal(y[t], y[0] * 2.0 ** t), f"mask changed at step {t}"
    assert len({tuple(row.tolist()) for row in kept}) > 1, "each sequence gets its own mask"
    layer.eval()
    assert torch.equal(layer(torch.randn(T, 8, H, dtype=F64), torch.ones(1, 8, 16, dtype=F64))[0],
                       torch.ones(T, 8, 16, dtype=F64))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_relu"])
def test_zoneout_in_training_keeps_each_unit_or_takes_the_new_value(name):
    """Each unit of the state is, at each step, either its previous value or the cell's new one
    (and both happen)."""
    layer = make(name, zoneout=0.5)
    cell = {"lstm": lstmkit.LSTMCell, "gru": lstmkit.GRUCell, "rnn_relu": lstmkit.RNNCell}[name]
    cell = cell(IN, H, dtype=F64, **({"nonlinearity": "relu"} if name == "rnn_relu" else {}))
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x, state = torch.randn(T, B, IN, dtype=F64), random_state(layer)
    state = layer.family.make_state(*(t[0] for t in parts(state)))
    kept_any = new_any = False
    for t in range(T):
        _, after = layer(x[t:t + 1], layer.family.make_state(*(s[None] for s in parts(state))))
        new = cell(x[t], state)
        for got, prev, cur in zip(parts(after), parts(state), parts(new)):
            got = got[0]
            kept, took = got == prev, torch.isclose(got, cur, rtol=0, atol=1e-14)
            assert torch.all(kept | took)
            kept_any, new_any = kept_any or bool((kept & ~took).any()), new_any or bool(
                (took & ~kept).any())
        state = layer.family.make_state(*(s[0] for s in parts(after)))
    assert kept_any and new_any


@pytest.mark.parametrize("name", ["lstm_variant", "gru", "rnn_relu"])
def test_zoneout_in_evaluation_uses_the_expectation(name):
    """s_t = p s_{t-1} + (1 - p) cell(x_t, s_{t-1}), for h and c alike."""
    p = 0.3
    layer = make(name, zoneout=p).eval()
    plain = make(name)
    plain.load_state_dict(layer.state_dict())
    x, state = torch.randn(T, B, IN, dtype=F64), random_state(layer)
    y, final = layer(x, state)
    for t in range(T):
        _, new = plain(x[t:t + 1], state)
        state = layer.family.make_state(*(p * s + (1 - p) * n
                                          for s, n in zip(parts(state), parts(new))))
        assert_close(y[t], parts(state)[0][0])
    for a, e in zip(parts(final), parts(state)):
        assert_close(a, e)


TRAINING_NOISE = {  # name -> (options, backends that run it)
    "recurrent_dropout": ({"recurrent_dropout": 0.4}, ("reference",)),
    "zoneout": ({"zoneout": 0.4}, ("reference",)),
    "dropout": ({"dropout": 0.4, "num_layers": 2}, ("reference", "native")),
}


@pytest.mark.parametrize("backend, noise", [
    pytest.param(b, options, id=f"{b}-{n}") for n, (options, backends) in TRAINING_NOISE.items()
    for b in backends])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_noise_is_seeded_and_only_in_training(backend, name, noise):
    layer = make(name, backend, **noise)
    x = torch.randn(T, B, IN, dtype=F64)

    def run(seed):
        torch.manual_seed(seed)
        return layer(x)[0]

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    layer.eval()
    clean = make(name, "reference", **{k: v for k, v in noise.items() if k == "num_layers"})
    clean.load_state_dict(layer.state_dict())
    clean.eval()
    evaluated = run(1)
    assert torch.equal(evaluated, run(2))
    if "zoneout" not in noise:  # zoneout's expectation is not the plain cell
        assert_close(evaluated, clean(x)[0])
    layer.train()
    assert not torch.allclose(run(1), evaluated)


GRADCHECK_CASES = {
    "lengths": ("lstm_variant", {}, True, True),
    "lengths_bidirectional": ("lstm_variant", {"bidirectional": True}, True, True),
    "bidirectional_two_layers": ("gru_reset_before", {"bidirectional": True, "num_layers": 2},
                                 False, True),
    "zoneout_eval": ("lstm_variant", {"zoneout": 0.3}, True, False),
    "zoneout_training": ("lstm_proj", {"zoneout": 0.3}, False, True),
    "recurrent_dropout_fixed_mask": ("lstm_variant", {"recurrent_dropout": 0.3}, False, True),
    "rnn_lengths_bidirectional": ("rnn_relu", {"bidirectional": True}, True, True),
}


@pytest.mark.parametrize("name, options, with_lengths, training", GRADCHECK_CASES.values(),
                         ids=GRADCHECK_CASES.keys())
def test_gradcheck_layer(name, options, with_lengths, training):
    """Gradients of output and final state w.r.t. input, initial state and every parameter;
    random masks are fixed by reseeding before each evaluation."""
    cls, extra = LAYERS[name]
    layer = cls(2, 3, dtype=F64, backend="reference", **extra, **options).train(training)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, 3, 2, dtype=F64, requires_grad=True)
    hx = [t.requires_grad_() for t in parts(random_state(layer, 3))]
    lengths = torch.tensor([2, 4, 1]) if with_lengths else None

    def run(x, *tensors):
        torch.manual_seed(0)
        state = layer.family.make_state(*tensors[:len(hx)])
        y, final = functional_call(layer, dict(zip(names, tensors[len(hx):])), (x, state),
                                   {"lengths": lengths})
        return (y, *parts(final))

    # fast_mode compares random projections of the Jacobians: a wrong gradient still shows,
    # with far fewer evaluations than the full Jacobian
    assert torch.autograd.gradcheck(run, (x, *hx, *params), fast_mode=True)
