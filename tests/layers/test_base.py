"""The layer module: torch.nn interchange and the messages for bad input."""

from __future__ import annotations

import pytest
import torch
from support import python_output
from tolerances import assert_close
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import lstmkit

IN, H, T, B = 3, 4, 5, 2

TORCH_MODULES = {
    "lstm": (lstmkit.LSTM, lambda: nn.LSTM(IN, H, 2, batch_first=True, dropout=0.25,
                                           bidirectional=True, proj_size=2)),
    "lstm_nobias": (lstmkit.LSTM, lambda: nn.LSTM(IN, H, bias=False)),
    "gru": (lstmkit.GRU, lambda: nn.GRU(IN, H, 2, bidirectional=True)),
    "rnn": (lstmkit.RNN, lambda: nn.RNN(IN, H, 2, "relu", batch_first=True)),
}


@pytest.mark.parametrize("cls, build", TORCH_MODULES.values(), ids=TORCH_MODULES.keys())
def test_from_torch_and_back(cls, build):
    module = build().double().eval()
    layer = cls.from_torch(module).eval()
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in module.named_parameters()]
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "mode"):
        assert getattr(layer, name) == getattr(module, name), name
    x = torch.randn(B, T, IN, dtype=torch.float64)
    y, _ = layer(x)
    assert_close(y, module(x)[0])
    back = layer.to_torch()
    assert type(back) is type(module)
    assert repr(back) == repr(module)
    for (name, a), (_, e) in zip(back.state_dict().items(), module.state_dict().items()):
        assert torch.equal(a, e), name


def test_from_torch_takes_lstmkit_options():
    module = nn.LSTM(IN, H)
    layer = lstmkit.LSTM.from_torch(module, backend="reference")
    assert layer.backend().name == "reference"
    assert torch.equal(layer.weight_hh_l0, module.weight_hh_l0)


def test_from_torch_into_a_variant_keeps_the_new_tensors_initialised():
    module = nn.LSTM(IN, H, bidirectional=True)
    layer = lstmkit.LSTM.from_torch(module, peephole=True, layer_norm=True)
    for name, value in module.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value)
    assert torch.equal(layer.weight_ln_c_l0_reverse, torch.ones(H))
    assert layer.weight_peephole_l0.abs().max() <= 1 / H ** 0.5


def test_dropout_one_is_accepted_as_in_torch():
    layer = lstmkit.LSTM.from_torch(nn.LSTM(IN, H, 2, dropout=1.0))
    y, _ = layer.train()(torch.randn(3, 2, IN))
    assert layer.dropout == 1.0 and y.isfinite().all()


def test_torch_state_dict_loads_directly():
    module = nn.LSTM(IN, H, 2, proj_size=2)
    layer = lstmkit.LSTM(IN, H, 2, proj_size=2)
    layer.load_state_dict(module.state_dict())
    for name, value in module.state_dict().items():
        assert torch.equal(layer.state_dict()[name], value)


@pytest.mark.parametrize("layer", [lstmkit.LSTM(IN, H, peephole=True),
                                   lstmkit.GRU(IN, H, reset_after=False),
                                   lstmkit.RNN(IN, H, zoneout=0.1),
                                   lstmkit.LSTM(IN, H, recurrent_dropout=0.1)],
                         ids=["peephole", "reset_before", "zoneout", "recurrent_dropout"])
def test_to_torch_on_a_variant_raises(layer):
    with pytest.raises(ValueError, match="to_torch: expected a configuration torch.nn computes"):
        layer.to_torch()


def test_from_torch_wants_its_own_family():
    with pytest.raises(TypeError, match=r"expected a torch.nn.LSTM, got GRU"):
        lstmkit.LSTM.from_torch(nn.GRU(IN, H))


LSTM = lstmkit.LSTM(IN, H, 2)
GRU = lstmkit.GRU(IN, H)


def state(*shapes, dtype=torch.float32):
    return tuple(torch.zeros(s, dtype=dtype) for s in shapes)


BAD_INPUTS = {  # name -> (call, exception, pattern the message must match)
    "rank": (lambda: LSTM(torch.randn(2, T, B, IN)), ValueError,
             r"input: expected shape \(T, B, 3\).*got \(2, 5, 2, 3\)"),
    "features": (lambda: LSTM(torch.randn(T, B, IN + 1)), ValueError,
                 r"input: expected shape \(T, B, 3\).*got \(5, 2, 4\)"),
    "dtype": (lambda: LSTM(torch.randn(T, B, IN, dtype=torch.float64)), TypeError,
              r"input: expected dtype torch.float32.*got torch.float64"),
    "integer": (lambda: LSTM(torch.ones(T, B, IN, dtype=torch.int64)), TypeError,
                r"input: expected dtype torch.float32.*got torch.int64"),
    "not_a_tensor": (lambda: LSTM([[0.0] * IN]), TypeError,
                     r"input: expected a torch.Tensor, got list"),
    "device": (lambda: LSTM(torch.randn(T, B, IN, device="meta")), ValueError,
               r"input: expected device cpu.*got meta"),
    "h_shape": (lambda: LSTM(torch.randn(T, B, IN), state((1, B, H), (2, B, H))), ValueError,
                r"hx.h: expected shape \(2, 2, 4\), got \(1, 2, 4\)"),
    "c_shape": (lambda: LSTM(torch.randn(T, B, IN), state((2, B, H), (2, B, H + 1))), ValueError,
                r"hx.c: expected shape \(2, 2, 4\), got \(2, 2, 5\)"),
    "unbatched_with_batched_state": (lambda: GRU(torch.randn(T, IN), torch.zeros(1, B, H)),
                                     ValueError, r"hx: expected shape \(1, 4\), got \(1, 2, 4\)"),
    "state_dtype": (lambda: GRU(torch.randn(T, B, IN), torch.zeros(1, B, H, dtype=torch.float64)),
                    TypeError, r"hx: expected dtype torch.float32.*got torch.float64"),
    "lstm_state_as_tensor": (lambda: LSTM(torch.randn(T, B, IN), torch.zeros(2, B, H)),
                             TypeError, r"hx: expected a tuple \(h, c\), got Tensor"),
    "lstm_state_of_three": (lambda: LSTM(torch.randn(T, B, IN), state(*[(2, B, H)] * 3)),
                            TypeError, r"hx: expected a tuple \(h, c\), got tuple of length 3"),
    "gru_state_as_tuple": (lambda: GRU(torch.randn(T, B, IN), state((1, B, H))), TypeError,
                           r"hx: expected a torch.Tensor, got tuple"),
    "lengths_list": (lambda: GRU(torch.randn(T, B, IN), lengths=[T, T]), TypeError,
                     r"lengths: expected a 1-D integer torch.Tensor, got list"),
    "lengths_float": (lambda: GRU(torch.randn(T, B, IN), lengths=torch.tensor([1.0, 2.0])),
                      TypeError, r"lengths: expected an integer dtype, got torch.float32"),
    "lengths_2d": (lambda: GRU(torch.randn(T, B, IN), lengths=torch.tensor([[1, 2]])),
                   ValueError, r"lengths: expected shape \(2,\).*got \(1, 2\)"),
    "lengths_size": (lambda: GRU(torch.randn(T, B, IN), lengths=torch.tensor([1, 2, 3])),
                     ValueError, r"lengths: expected shape \(2,\).*got \(3,\)"),
    "lengths_zero": (lambda: GRU(torch.randn(T, B, IN), lengths=torch.tensor([0, 2])),
                     ValueError, r"lengths: expected values in 1\.\.5.*got values in 0\.\.2"),
    "lengths_too_long": (lambda: GRU(torch.randn(T, B, IN), lengths=torch.tensor([6, 2])),
                         ValueError, r"lengths: expected values in 1\.\.5.*got values in 2\.\.6"),
    "lengths_with_packed": (lambda: GRU(pack_sequence([torch.randn(2, IN)]),
                                        lengths=torch.tensor([2])),
                            ValueError, r"lengths: expected None with a PackedSequence"),
    "step_rank": (lambda: GRU.step(torch.randn(1, B, IN)), ValueError,
                  r"x_t: expected shape \(B, 3\) or \(3,\), got \(1, 2, 3\)"),
    "step_features": (lambda: GRU.step(torch.randn(B, IN + 2)), ValueError,
                      r"x_t: expected shape \(B, 3\) or \(3,\), got \(2, 5\)"),
    "step_dtype": (lambda: GRU.step(torch.randn(B, IN).double()), TypeError,
                   r"x_t: expected dtype torch.float32.*got torch.float64"),
}


@pytest.mark.parametrize("call, error, pattern", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_says_what_was_expected_and_what_came(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


BAD_ARGUMENTS = {
    "negative_input_size": (lambda: lstmkit.LSTM(-1, H), ValueError,
                            r"input_size: expected an int >= 1, got -1"),
    "zero_hidden_size": (lambda: lstmkit.GRU(IN, 0), ValueError,
                         r"hidden_size: expected an int >= 1, got 0"),
    "float_hidden_size": (lambda: lstmkit.RNN(IN, 4.0), TypeError,
                          r"hidden_size: expected an int, got float"),
    "zero_layers": (lambda: lstmkit.LSTM(IN, H, 0), ValueError,
                    r"num_layers: expected an int >= 1, got 0"),
    "proj_size_too_big": (lambda: lstmkit.LSTM(IN, H, proj_size=H), ValueError,
                          r"proj_size: expected 0 or less than hidden_size=4, got 4"),
    "negative_proj_size": (lambda: lstmkit.LSTM(IN, H, proj_size=-1), ValueError,
                           r"proj_size: expected an int >= 0, got -1"),
    "lstm_option_on_gru": (lambda: lstmkit.GRU(IN, H, peephole=True), TypeError, r"peephole"),
    "lstm_option_on_gru_config": (
        lambda: lstmkit.cell_config("gru", IN, H, proj_size=2, peephole=True), ValueError,
        r"proj_size, peephole: expected options of the 'gru' family"),
    "nonlinearity": (lambda: lstmkit.RNN(IN, H, nonlinearity="sigmoid"), ValueError,
                     r"nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"),
    "dropout_above_range": (lambda: lstmkit.LSTM(IN, H, dropout=1.5), ValueError,
                            r"dropout: expected a float in \[0, 1\], got 1.5"),
    "dropout_below_range": (lambda: lstmkit.GRU(IN, H, dropout=-0.1), ValueError,
                            r"dropout: expected a float in \[0, 1\], got -0.1"),
    "zoneout_type": (lambda: lstmkit.LSTM(IN, H, zoneout="0.1"), TypeError,
                     r"zoneout: expected a float in \[0, 1\), got str"),
    "recurrent_dropout_one": (lambda: lstmkit.LSTM(IN, H, recurrent_dropout=1.0), ValueError,
                              r"recurrent_dropout: expected a float in \[0, 1\), got 1.0"),
    "unknown_activation": (lambda: lstmkit.LSTM(IN, H, gate_activation="swish"), ValueError,
                           r"gate_activation: expected one of \[.*'sigmoid'.*\], got 'swish'"),
    "unknown_backend": (lambda: lstmkit.LSTM(IN, H, backend="cudnn9"), ValueError,
                        r"backend: expected one of \('auto', .*'native', ('triton', )?"
                        r"('triton_xlstm', )?'xlstm', 'reference'.*\), "
                        r"got 'cudnn9'"),
    "native_on_a_variant": (lambda: lstmkit.LSTM(IN, H, backend="native", peephole=True),
                            ValueError, r"backend 'native' cannot run this configuration: "
                                        r"peephole=True is not covered"),
    "native_with_zoneout": (lambda: lstmkit.GRU(IN, H, backend="native", zoneout=0.1),
                            ValueError, r"backend 'native' cannot run this configuration"),
    "cell_clip_negative": (lambda: lstmkit.LSTM(IN, H, cell_clip=-1.0), ValueError,
                           r"cell_clip: expected None or a positive float, got -1.0"),
    "cell_clip_bool": (lambda: lstmkit.LSTM(IN, H, cell_clip=True), ValueError,
                       r"cell_clip: expected None or a positive float, got True"),
}


@pytest.mark.parametrize("call, error, pattern", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_impossible_constructor_arguments_say_what_was_expected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_a_layer_runs_without_importing_the_compiler():
    """Marking the backends' constant functions for torch.compile must not import torch._dynamo
    (and Triton with it): 1.5 s on the first layer for users who never compile."""
    code = ("import sys, torch, lstmkit\n"
            "for layer in (lstmkit.LSTM(3, 4), lstmkit.GRU(3, 4, backend='reference')):\n"
            "    layer(torch.randn(2, 1, 3))\n"
            "print(sorted(m for m in ('torch._dynamo', 'triton') if m in sys.modules))")
    assert python_output(code) == "[]"


def test_a_parametrised_weight_is_what_the_layer_computes_with():
    """torch.nn.utils.parametrizations (weight norm here) replace a parameter by a computed
    one that is no longer in the module's _parameters: the layer must read the computed one,
    and follow a change of what it is computed from, as torch.nn's modules do."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(IN, H, dtype=torch.float64)
    module = layer.to_torch()
    for m in (layer, module):
        nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
        with torch.no_grad():
            m.parametrizations.weight_hh_l0.original0.mul_(3.0)
    x = torch.randn(T, B, IN, dtype=torch.float64)
    assert_close(layer(x)[0], module(x)[0], torch.float64)
