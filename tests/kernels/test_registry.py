"""The backend table: names, lookup, "auto" and the reasons a backend gives."""

from __future__ import annotations

import importlib

import pytest
import torch

from lstmkit import kernels
from lstmkit.config import LayerConfig, cell_config

PLAIN = LayerConfig(cell_config("lstm", 3, 4), num_layers=2, bidirectional=True)
VARIANTS = [LayerConfig(cell_config("lstm", 3, 4, peephole=True)),
            LayerConfig(cell_config("gru", 3, 4, reset_after=False)),
            LayerConfig(cell_config("rnn", 3, 4), zoneout=0.1),
            LayerConfig(cell_config("lstm", 3, 4), recurrent_dropout=0.1)]
CPU = torch.device("cpu")


def test_every_registered_module_exposes_its_backend():
    assert {"native", "reference"} <= set(kernels.names())
    for name, module in kernels._MODULES.items():
        assert importlib.import_module(module).BACKEND.name == name
        assert kernels.get(name).name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', .*'native', "
                                         r"('triton', )?('triton_xlstm', )?'xlstm', "
                                         r"'reference'.*\), got 'fast'"):
        kernels.get("fast")


@pytest.fixture
def without_compiled_kernels(monkeypatch):
    """A machine where the cpu backend cannot build (tests/kernels/cpu covers the other)."""
    from lstmkit.kernels.cpu import _build

    monkeypatch.setattr(_build, "problem", lambda: "no C++ compiler (test)")
    kernels.resolve.cache_clear()
    yield
    kernels.resolve.cache_clear()


@pytest.mark.parametrize("training", [True, False])
def test_auto_takes_native_for_plain_configurations_and_reference_for_variants(
        training, without_compiled_kernels):
    assert kernels.resolve("auto", PLAIN, CPU, torch.float32, training).name == "native"
    for config in VARIANTS:
        assert kernels.resolve("auto", config, CPU, torch.float64, training).name == "reference"


def test_named_backend_that_cannot_run_says_why():
    with pytest.raises(ValueError, match=r"backend 'native' cannot run this configuration: "
                                         r"peephole=True is not covered"):
        kernels.resolve("native", VARIANTS[0], CPU, torch.float32, True)
    assert kernels.resolve("reference", PLAIN, CPU, torch.float32, True).name == "reference"


def test_explain_gives_every_backend_and_its_reason():
    rows = dict(kernels.explain(VARIANTS[0]))
    assert list(rows) == list(kernels.names())
    assert rows["reference"] is None
    assert "peephole=True" in rows["native"]
    assert all(reason is None for _, reason in kernels.explain(PLAIN) if _ in ("native",
                                                                            "reference"))


def test_a_declaration_fails_closed_on_an_option_it_does_not_name():
    """An option a backend never heard of is refused, even at its default value: a field added
    to a family later is not computed by a backend until it declares it."""
    from lstmkit.cells.base import ANY
    from lstmkit.kernels.contract import Backend, Declaration

    options = {"bias": ANY, "proj_size": ANY, "peephole": ANY, "coupled": ANY,
               "input_gate": ANY, "forget_gate": ANY, "output_gate": ANY, "cell_clip": ANY,
               "gate_activation": ANY, "cell_activation": ANY, "output_activation": ANY}
    old = Declaration(families={"lstm": options})  # one that predates layer_norm
    assert old.refuses(PLAIN, CPU, torch.float32) == (
        "option 'layer_norm' of the 'lstm' family is not declared")
    full = Declaration(families={"lstm": {**options, "layer_norm": (False,)}})
    assert full.refuses(PLAIN, CPU, torch.float32) is None
    assert full.refuses(LayerConfig(cell_config("lstm", 3, 4, layer_norm=True)), CPU,
                        torch.float32) == "layer_norm=True is not covered (declared: False)"
    assert "does not compute the 'gru' family" in full.refuses(VARIANTS[1], CPU, torch.float32)
    assert full.refuses(VARIANTS[3], CPU, torch.float32) is None  # every feature by default
    narrow = Declaration(families={"lstm": {**options, "layer_norm": ANY}},
                         features=frozenset({"lengths"}))
    assert narrow.refuses(VARIANTS[3], CPU, torch.float32) == (
        "does not declare the layer feature recurrent_dropout")
    stacked = LayerConfig(cell_config("lstm", 3, 4), num_layers=2, bidirectional=True,
                          dropout=0.5)
    assert narrow.refuses(stacked, CPU, torch.float32) == (
        "does not declare the layer feature bidirectional")
    scan = Backend("narrow", narrow, scan=lambda *args: None)  # the layer reverses and drops
    assert scan.supports(stacked, CPU, torch.float32) is None
    whole = Backend("narrow", narrow, stack=lambda *args: None)  # a stack must do it itself
    assert "bidirectional" in whole.supports(stacked, CPU, torch.float32)
