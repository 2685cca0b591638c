"""Edge cases every backend treats alike: sequences that all end before T, an empty batch, no
time steps, and bad values at the boundary getting the documented exception types.

The rule (docs/equations.md, "What layers add"): T = 0 is refused with a ValueError on every
backend, as torch.nn refuses it; B = 0 gives an empty output and an empty state, and gradients of
zero.
"""

from __future__ import annotations

import pytest
import torch
from support import parts, probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit.kernels.cpu import _build

LAYERS = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}
VARIANT = {"lstm": {"peephole": True}, "gru": {"reset_after": False}, "rnn": {}}


def _backends(family: str, variant: bool) -> list[str]:
    names = ["reference", "cpu"] if variant else ["reference", "native", "cpu"]
    if _build.problem() is not None:
        names.remove("cpu")
    return names


CASES = [(family, variant, backend) for family in LAYERS for variant in (False, True)
         for backend in _backends(family, variant)]


def _layer(family: str, variant: bool, backend: str, **options):
    options = {**(VARIANT[family] if variant else {}), **options}
    return LAYERS[family](2, 3, backend=backend, dtype=torch.float64, **options)


@pytest.mark.parametrize("family, variant, backend", CASES)
def test_every_sequence_ending_before_the_last_step(family, variant, backend):
    # lengths all 3 < T = 5, none past the shortest: native's dense prefix once packed nothing
    reference = _layer(family, variant, "reference")
    layer = _layer(family, variant, backend)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    lengths = torch.tensor([3, 3])
    y, state = layer(x, lengths=lengths)
    y_ref, state_ref = reference(x, lengths=lengths)
    assert_close(y, y_ref)
    assert torch.equal(y[3:], torch.zeros_like(y[3:]))
    for a, e in zip(parts(state), parts(state_ref)):
        assert_close(a, e)
    y_short, state_short = reference(x[:3])  # the same as running the three steps alone
    assert_close(y[:3], y_short)
    for a, e in zip(parts(state), parts(state_short)):
        assert_close(a, e)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["dense", "lengths"])
@pytest.mark.parametrize("family, variant, backend", CASES)
def test_an_empty_batch_runs_forwards_and_backwards(family, variant, backend, with_lengths):
    layer = _layer(family, variant, backend, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([], dtype=torch.int64) if with_lengths else None
    y, state = layer(x, lengths=lengths)
    assert y.shape == (5, 0, 6)
    assert all(s.shape[:2] == (4, 0) for s in parts(state))
    probe_loss(y, *parts(state)).backward()  # a division by the batch once killed the process
    assert x.grad.shape == x.shape
    for name, p in layer.named_parameters():
        assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p)), name


@pytest.mark.parametrize("family, variant, backend", CASES)
def test_no_time_steps_is_a_value_error_on_every_backend(family, variant, backend):
    layer = _layer(family, variant, backend)
    with pytest.raises(ValueError, match="at least one time step, got T=0"):
        layer(torch.randn(0, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one time step"):
        layer(torch.randn(0, 2, dtype=torch.float64))  # unbatched


def test_lengths_on_another_device_are_a_value_error():
    layer = lstmkit.LSTM(2, 3)
    with pytest.raises(ValueError, match="lengths: expected a tensor on the CPU or on the "
                                         "input's device cpu, got device meta"):
        layer(torch.randn(5, 2, 2), lengths=torch.tensor([3, 3], device="meta"))


@pytest.mark.parametrize("make", [lambda: lstmkit.LSTM(2, 3), lambda: lstmkit.LSTMCell(2, 3),
                                  lambda: lstmkit.GRU(2, 3)], ids=["layer", "cell", "gru"])
def test_init_state_checks_its_batch_size(make):
    module = make()
    with pytest.raises(ValueError, match="batch_size: expected None or an int >= 0, got -1"):
        module.init_state(-1)
    with pytest.raises(TypeError, match="batch_size: expected None or an int, got float"):
        module.init_state(2.5)
    with pytest.raises(TypeError, match="batch_size: expected None or an int, got bool"):
        module.init_state(True)
    assert parts(module.init_state(0))[0].shape[-2] == 0


@pytest.mark.parametrize("name", ["gate_activation", "cell_activation", "output_activation"])
def test_an_activation_that_is_not_a_string_is_a_type_error(name):
    with pytest.raises(TypeError, match=f"{name}: expected a str from .*, got list"):
        lstmkit.LSTM(2, 3, **{name: ["sigmoid"]})
