"""ONNX export of xLSTM block stacks: the graph's interface, and the converters it builds on
(conformance against float64 truth is in tests/kernels/test_conformance.py)."""

import numpy as np
import pytest
import torch

from lstmkit.cells import slstm
from lstmkit.export.onnx_xlstm import headwise_dense, state_names
from lstmkit.layers.xlstm_blocks import HeadwiseLinear
from tests.tiny_models import xlstm_charlm, xlstm_stack

ort = pytest.importorskip("onnxruntime")


def test_headwise_and_recurrent_matrices_as_one_matrix():
    torch.manual_seed(0)
    layer = HeadwiseLinear(6, 3, bias=False, dtype=torch.float64)
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(4, 6, dtype=torch.float64)
    dense = headwise_dense(layer.weight.detach().numpy())
    np.testing.assert_allclose(x.numpy() @ dense, layer(x).detach().numpy(), rtol=1e-13)
    r, h = torch.randn(2, 3, 4, 3, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    np.testing.assert_allclose(h.numpy() @ slstm.dense_recurrent(r.numpy()),
                               slstm.recurrent_term(h, r).numpy(), rtol=1e-13)


def test_a_graph_without_lengths_or_state_inputs_still_returns_the_state(tmp_path):
    from lstmkit.export.onnx import export_onnx

    model = xlstm_charlm()
    proto = export_onnx(model, tmp_path / "m.onnx", lengths=False, initial_state=False)
    names = [n for n, _ in state_names(model)]
    assert names == ["b0_conv", "b0_C", "b0_n", "b0_m", "b1_conv", "b1_h", "b1_c", "b1_n",
                     "b1_m"]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"] + [f"{n}_n" for n in names]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 11, (2, 6))
    y, *final = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want, state = model(x)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-4, atol=1e-5)
    from torch.utils._pytree import tree_flatten

    for got, t in zip(final, tree_flatten(state)[0]):
        np.testing.assert_allclose(got, t.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_over_each_sequences_valid_steps(pooling, tmp_path):
    from lstmkit.export.onnx import export_onnx

    model = xlstm_stack(pooling=pooling)
    export_onnx(model, tmp_path / "m.onnx", initial_state=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 2, 4])
    (y,) = session.run(["output"], {"input": x.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x, lengths=lengths)[0].numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_a_layer_outside_a_sequence_model_is_refused_saying_why(tmp_path):
    from lstmkit import sLSTM
    from lstmkit.export.onnx import export_onnx

    with pytest.raises(TypeError, match="expected an lstmkit SequenceModel, got sLSTM"):
        export_onnx(sLSTM(3, 8, num_heads=2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bidirectional_stacks_are_refused_by_onnx_and_the_runtime(tmp_path):
    import dataclasses

    from tiny_models import xlstm_stack

    from lstmkit.export.onnx import export_onnx
    from lstmkit.export.runtime import export_runtime
    from lstmkit.models import ModelConfig, SequenceModel

    stack = dataclasses.replace(xlstm_stack().config.layer, bidirectional=True)
    model = SequenceModel(ModelConfig(stack, 2)).eval()
    with pytest.raises(ValueError, match="bidirectional xLSTM stack cannot be exported"):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="runs unidirectional xLSTM stacks"):
        export_runtime(model, tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())
