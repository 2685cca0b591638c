import numpy as np
import pytest
import torch

from lstmkit import cell_config
from lstmkit.export.onnx import export_onnx, uses_native_operator
from tests.tiny_models import ZOO, forecaster, make_model

ort = pytest.importorskip("onnxruntime")


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _inputs(model, batch, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    if model.config.vocab_size:
        return torch.randint(0, model.config.vocab_size, (batch, steps), generator=gen)
    return torch.randn(batch, steps, model.config.layer.cell.input_size, generator=gen)


def _tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _check(model, session, batch, lengths, seed):
    x = _inputs(model, batch, 6, seed)
    h0 = tuple(torch.randn_like(t) for t in _tuple(model.init_state(batch)))
    with torch.no_grad():
        want, state = model(x, h0 if len(h0) > 1 else h0[0], lengths=lengths)
    feed = {"input": x.numpy(), "h0": h0[0].numpy()}
    feed["lengths"] = (torch.full((batch,), 6) if lengths is None else lengths).numpy()
    if len(h0) > 1:
        feed["c0"] = h0[1].numpy()
    got = session.run(None, feed)
    np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-4, atol=1e-5)
    for g, w in zip(got[1:], _tuple(state)):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_onnx_runtime_equals_the_model_with_lengths_states_and_a_dynamic_batch(name, tmp_path):
    model = ZOO[name]()
    export_onnx(model, tmp_path / "m.onnx")
    session = _session(tmp_path / "m.onnx")
    _check(model, session, 3, torch.tensor([6, 2, 4]), seed=0)  # variable lengths
    _check(model, session, 5, None, seed=1)  # another batch size, same graph


@pytest.mark.parametrize("name, operator", [
    ("plain", "LSTM"), ("peephole_clip_coupled_bidir", "LSTM"), ("activations", "LSTM"),
    ("gru_bidir", "GRU"), ("gru_paper", "GRU"), ("rnn_relu_bidir", "RNN"),
    ("variant", "Scan"), ("layernorm_proj_bidir", "Scan"), ("ablation", "Scan"),
    ("gru_zoneout", "Scan"), ("activations2", "Scan"),
])
def test_standard_operators_where_the_configuration_maps(name, operator, tmp_path):
    proto = export_onnx(ZOO[name](), tmp_path / "m.onnx")
    used = {node.op_type for node in proto.graph.node}
    assert operator in used
    assert not ({"LSTM", "GRU", "RNN", "Scan"} - {operator}) & used


def test_without_lengths_and_state_inputs(tmp_path):
    model = forecaster()
    proto = export_onnx(model, tmp_path / "m.onnx", lengths=False, initial_state=False)
    assert [i.name for i in proto.graph.input] == ["input"]
    x = _inputs(model, 2, 5, 3)
    (got, h, c) = _session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})
    with torch.no_grad():
        want, (h_want, c_want) = model(x)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, c_want.numpy(), rtol=1e-4, atol=1e-5)


def test_only_the_mappable_cells_use_the_operator():
    assert uses_native_operator(cell_config("lstm", 2, 3, peephole=True, coupled=True), 0.0)
    assert not uses_native_operator(cell_config("lstm", 2, 3), 0.1)
    assert not uses_native_operator(cell_config("lstm", 2, 3, proj_size=2), 0.0)
    assert not uses_native_operator(cell_config("lstm", 2, 3, output_activation="identity"), 0.0)
    assert not uses_native_operator(cell_config("lstm", 2, 3, cell_activation="softplus"), 0.0)
    assert uses_native_operator(cell_config("gru", 2, 3, reset_after=False), 0.0)


def test_softplus_stays_finite_where_the_recurrent_operator_overflows(tmp_path):
    # Pre-activations of several hundred: ONNX Runtime's recurrent Softplus gives inf above
    # about 88 in float32, lstmkit's (and the elementwise operator's) is linear there.
    model = make_model(cell_config("lstm", 3, 4, cell_activation="softplus"), 2)
    with torch.no_grad():
        model.rnn.weight_ih_l0.mul_(200.0)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        want, (_, c_want) = model(x)
    assert torch.isfinite(c_want).all() and c_want.abs().max() > 100.0
    export_onnx(model, tmp_path / "m.onnx", lengths=False, initial_state=False)
    (got, _, c) = _session(tmp_path / "m.onnx").run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c, c_want.numpy(), rtol=1e-4, atol=1e-3)


def test_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(TypeError, match="SequenceModel"):
        export_onnx(torch.nn.LSTM(2, 3), tmp_path / "m.onnx")
