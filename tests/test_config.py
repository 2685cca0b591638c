"""The frozen configurations: their checks, derived properties and dict round trip."""

from __future__ import annotations

import dataclasses

import pytest

from lstmkit.config import LayerConfig, cell_config


def test_layer_config_round_trips_through_a_dict():
    config = LayerConfig(cell_config("lstm", 3, 8, proj_size=2, peephole=True, cell_clip=3.0,
                                    chrono=50), 2, True, 0.1, True, 0.2, 0.3, "reference")
    assert LayerConfig.from_dict(config.to_dict()) == config


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell_config("gru", 3, 4).hidden_size = 5


def test_derived_properties():
    config = LayerConfig(cell_config("lstm", 3, 8, proj_size=2), num_layers=3, bidirectional=True)
    assert config.cell.output_size == 2 and cell_config("gru", 3, 8).output_size == 8
    assert config.num_directions == 2
    assert config.layer_cell(0) is config.cell
    assert config.layer_cell(2).input_size == 4 and config.layer_cell(2).proj_size == 2


@pytest.mark.parametrize("config, compatible", [
    (LayerConfig(cell_config("lstm", 3, 4, proj_size=2, forget_bias=1.0, chrono=None)), True),
    (LayerConfig(cell_config("rnn", 3, 4, nonlinearity="relu"), dropout=0.5), True),
    (LayerConfig(cell_config("lstm", 3, 4, peephole=True)), False),
    (LayerConfig(cell_config("lstm", 3, 4, output_gate=False)), False),
    (LayerConfig(cell_config("gru", 3, 4, reset_after=False)), False),
    (LayerConfig(cell_config("gru", 3, 4), zoneout=0.1), False),
    (LayerConfig(cell_config("rnn", 3, 4), recurrent_dropout=0.1), False),
])
def test_torch_compatibility_ignores_init_options_only(config, compatible):
    assert config.is_torch_compatible is compatible


BAD = {  # name -> (constructor, exception, pattern)
    "family": (lambda: cell_config("lstm2", 3, 4), ValueError,
               r"family: expected one of \('lstm', 'gru', 'rnn'.*\), got 'lstm2'"),
    "bias_type": (lambda: cell_config("lstm", 3, 4, bias=1), TypeError,
                  r"bias: expected a bool, got int"),
    "bool_size": (lambda: cell_config("lstm", True, 4), TypeError,
                  r"input_size: expected an int, got bool"),
    "nonlinearity_on_lstm": (lambda: cell_config("lstm", 3, 4, nonlinearity="relu"), ValueError,
                             r"nonlinearity: expected options of the 'lstm' family "
                             r"\(bias, .*\), got nonlinearity='relu'"),
    "reset_after_on_rnn": (lambda: cell_config("rnn", 3, 4, reset_after=False), ValueError,
                           r"reset_after: expected options of the 'rnn' family "
                           r"\(bias, nonlinearity\), got reset_after=False"),
    "chrono_on_gru": (lambda: cell_config("gru", 3, 4, chrono=10), ValueError,
                      r"chrono: expected options of the 'gru' family \(bias, reset_after\), "
                      r"got chrono=10"),
    "chrono_too_small": (lambda: cell_config("lstm", 3, 4, chrono=2), ValueError,
                         r"chrono: expected an int >= 3, got 2"),
    "chrono_with_forget_bias": (lambda: cell_config("lstm", 3, 4, chrono=10, forget_bias=1.0),
                                ValueError, r"chrono: expected without forget_bias/input_bias"),
    "bias_option_without_bias": (lambda: cell_config("lstm", 3, 4, bias=False, forget_bias=1.0),
                                 ValueError, r"forget_bias: expected bias=True, got bias=False"),
    "coupled_with_both_biases": (lambda: cell_config("lstm", 3, 4, coupled=True, forget_bias=1.0,
                                                    input_bias=-1.0),
                                 ValueError, r"expected one of them with coupled=True"),
    "coupled_without_input_gate": (lambda: cell_config("lstm", 3, 4, coupled=True,
                                                      input_gate=False),
                                   ValueError, r"coupled: expected input_gate=True"),
    "forget_bias_without_forget_gate": (
        lambda: cell_config("lstm", 3, 4, forget_gate=False, forget_bias=1.0), ValueError,
        r"forget_bias: expected forget_gate=True, got forget_gate=False"),
    "forget_bias_type": (lambda: cell_config("lstm", 3, 4, forget_bias="1"), TypeError,
                         r"forget_bias: expected None or a float, got str"),
    "unknown_activation": (lambda: cell_config("lstm", 3, 4, output_activation="gelu"),
                           ValueError, r"output_activation: expected one of .*got 'gelu'"),
    "layer_cell_type": (lambda: LayerConfig({"mode": "lstm"}), TypeError,
                        r"cell: expected a CellConfig, got dict"),
    "backend_type": (lambda: LayerConfig(cell_config("lstm", 3, 4), backend=None), TypeError,
                     r"backend: expected a str, got NoneType"),
    "batch_first_type": (lambda: LayerConfig(cell_config("lstm", 3, 4), batch_first="yes"),
                         TypeError, r"batch_first: expected a bool, got str"),
}


@pytest.mark.parametrize("build, error, pattern", BAD.values(), ids=BAD.keys())
def test_impossible_fields_say_what_was_expected(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build()
