"""The family registry as an extension point: a family that exists only in the tests
(tests/families.py, one module, one ``register`` line each) runs through the layer, the
reference, the streaming engine and the checkpoint, and is refused with a reason by everything
that does not declare it."""

from __future__ import annotations

import pytest
import torch
from families import MGU, OUTER, OuterState

import lstmkit
from lstmkit import kernels
from lstmkit.cells import FAMILIES, Family, family_of, register
from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers import RecurrentLayer, layer_from_config
from lstmkit.models import ModelConfig, SequenceModel

CPU = torch.device("cpu")


def test_registered_families_build_configs_by_key():
    assert FAMILIES["mgu_test"] is MGU and family_of("outer_test") is OUTER
    cfg = lstmkit.cell_config("mgu_test", 3, 4, bias=False)
    assert type(cfg).__name__ == "MGUConfig" and family_of(cfg) is MGU
    assert cfg.to_dict() == {"family": "mgu_test", "input_size": 3, "hidden_size": 4,
                             "bias": False}
    with pytest.raises(ValueError, match=r"peephole: expected options of the 'mgu_test' family "
                                         r"\(bias\), got peephole=True"):
        cell_config("mgu_test", 3, 4, peephole=True)
    with pytest.raises(ValueError, match=r"family: expected one of \(.*'mgu_test'.*\), got 'x'"):
        family_of("x")
    with pytest.raises(TypeError, match="expected a lstmkit.cells.Family, got dict"):
        register({})


def test_the_layer_computes_the_family_equations():
    """A layer of the new family is the equations of tests/families.py written out again."""
    layer = layer_from_config(LayerConfig(cell_config("mgu_test", 3, 4)), dtype=torch.float64)
    assert type(layer) is RecurrentLayer and layer.mode == "MGU_TEST"
    assert layer.backend().name == "reference"
    x, h = torch.randn(6, 2, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    y, h_n = layer(x)
    w = {n[:-3]: p for n, p in layer.named_parameters()}
    for t in range(6):
        a = x[t] @ w["weight_ih"].t() + w["bias_ih"] + h @ w["weight_hh"].t() + w["bias_hh"]
        z, n = torch.sigmoid(a[:, :4]), torch.tanh(a[:, 4:])
        h = (1 - z) * h + z * n
        torch.testing.assert_close(y[t], h)
    torch.testing.assert_close(h_n[0], h)


@pytest.mark.parametrize("name", ["native", "cpu", "triton"])
def test_backends_that_do_not_declare_it_refuse_it(name):
    config = LayerConfig(cell_config("mgu_test", 3, 4))
    reason = kernels.get(name).supports(config, CPU, torch.float32, True)
    assert reason is not None
    if name != "triton" or "Triton" not in reason:  # where Triton is installed and interpreted
        assert "does not compute the 'mgu_test' family" in reason
    with pytest.raises(ValueError, match=f"backend {name!r} cannot run this configuration"):
        layer_from_config(LayerConfig(cell_config("mgu_test", 3, 4), backend=name))


def test_a_matrix_state_without_the_output_is_carried_masked_and_checked():
    """outer_test's state is a (H, H) matrix C and a vector n, its output no part of it
    (``step_output``): zeros, shape checks, lengths and zoneout handle any rank."""
    layer = layer_from_config(LayerConfig(cell_config("outer_test", 3, 4), zoneout=0.2),
                              dtype=torch.float64).eval()
    c0, n0 = layer.init_state(2)
    assert c0.shape == (1, 2, 4, 4) and n0.shape == (1, 2, 4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y, state = layer(x, lengths=torch.tensor([5, 2]))
    assert isinstance(state, OuterState) and state.C.shape == (1, 2, 4, 4) and y.shape == (5, 2, 4)
    y_two, at_two = layer(x[:2, 1:])
    torch.testing.assert_close(state.C[:, 1], at_two.C[:, 0])  # frozen past its length
    torch.testing.assert_close(y[:2, 1], y_two[:, 0])
    assert (y[2:, 1] == 0).all()
    with pytest.raises(ValueError, match=r"hx.C: expected shape \(1, 2, 4, 4\), got \(1, 2, 4\)"):
        layer(x, (n0, n0))
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected 0 for the 'outer_test' "
                                         r"family \(its output is no part of its state"):
        layer_from_config(LayerConfig(cell_config("outer_test", 3, 4), recurrent_dropout=0.1))


def test_checkpoint_engine_export_and_runtime(tmp_path):
    """Saved and loaded by its key; the engine streams it; the exporter and the NumPy runtime
    refuse it, saying why."""
    import lstmkit.runtime
    from lstmkit.checkpoint import save
    from lstmkit.export.onnx import export_onnx
    from lstmkit.export.runtime import export_runtime
    from lstmkit.streaming import StreamEngine

    pytest.importorskip("onnx")
    model = SequenceModel(ModelConfig(LayerConfig(cell_config("outer_test", 3, 4),
                                                  batch_first=True), 2)).eval()
    save(tmp_path / "m.safetensors", model)
    loaded = lstmkit.load(tmp_path / "m.safetensors")
    x = torch.randn(1, 7, 3)
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)
    engine = StreamEngine(loaded)
    sid = engine.open()
    streamed = torch.cat([engine.push(sid, x[0, :3]), engine.push(sid, x[0, 3:])])
    torch.testing.assert_close(streamed, model(x)[0][0])
    with pytest.raises(ValueError, match="the 'outer_test' family has no ONNX mapping"):
        export_onnx(model, tmp_path / "m.onnx")
    export_runtime(model, tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"runtime: expected a cell family with a NumPy step "
                                         r"\(lstm, gru, rnn, slstm, mlstm\), got 'outer_test'"):
        lstmkit.runtime.load(tmp_path / "m.npz")


def test_a_family_is_a_frozen_unit():
    assert Family.__dataclass_params__.frozen
