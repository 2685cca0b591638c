"""The int8 ONNX export (lstmkit/export/quantize.py), run in ONNX Runtime: every recurrent
product and the head run as int8 nodes; the integer products compute their float definition;
and the quantised LSTM stays within the first-order bound that its quantisation steps allow."""

import numpy as np
import pytest
import torch

from lstmkit import cell_config
from lstmkit.cells import family_of
from lstmkit.export.quantize import INT8_OPS, export_onnx_int8
from lstmkit.layers.quantized import quantize_dynamic
from tests.tiny_models import ZOO, make_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

FLOAT_OPS = {"LSTM", "GRU", "RNN", "MatMul", "Gemm"}


def _session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _graphs(graph):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)


def _feed(model, batch=3, steps=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if model.config.vocab_size:
        x = torch.randint(0, model.config.vocab_size, (batch, steps), generator=gen)
    else:
        x = torch.randn(batch, steps, model.config.layer.cell.input_size, generator=gen)
    lengths = torch.tensor([steps, 2, 5][:batch])
    return x, lengths, {"input": x.numpy(), "lengths": lengths.numpy()}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_product_runs_int8(name, tmp_path):
    proto = export_onnx_int8(ZOO[name](), tmp_path / "int8.onnx", initial_state=False)
    used = [node.op_type for g in _graphs(proto.graph) for node in g.node]
    assert not FLOAT_OPS & set(used), f"float products left: {FLOAT_OPS & set(used)}"
    assert set(INT8_OPS) & set(used)
    if family_of(ZOO[name]().config.layer.cell).key != "lstm":
        assert "DynamicQuantizeLSTM" not in used and "Scan" in used  # no int8 GRU/RNN in ORT


def _as_float(proto):
    """The graph with every MatMulInteger written as its definition in float: (A - a_zero) @
    (B - b_zero), cast back to int32. The integer sums here stay far below 2**24, so float32
    holds them exactly."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for graph in _graphs(proto.graph):
        nodes = []
        for node in graph.node:
            if node.op_type != "MatMulInteger":
                nodes.append(node)
                continue
            a, b, a_zero, b_zero = node.input
            p = node.output[0] + "_float"

            def centred(v, zero, tag, p=p):
                make, name = onnx.helper.make_node, f"{p}_{tag}"
                return [make("Cast", [v], [name], to=1), make("Cast", [zero], [name + "z"], to=1),
                        make("Sub", [name, name + "z"], [name + "c"])]

            nodes += centred(a, a_zero, "a") + centred(b, b_zero, "b")
            nodes += [onnx.helper.make_node("MatMul", [f"{p}_ac", f"{p}_bc"], [p]),
                      onnx.helper.make_node("Cast", [p], [node.output[0]], to=6)]
        del graph.node[:]
        graph.node.extend(nodes)
    return proto


@pytest.mark.parametrize("name", ["variant", "gru_paper", "gru_bidir", "rnn_relu_bidir",
                                  "layernorm_proj_bidir"])
def test_integer_products_compute_their_definition(name, tmp_path):
    model = ZOO[name]()
    proto = export_onnx_int8(model, tmp_path / "int8.onnx", initial_state=False)
    _, _, feed = _feed(model)
    got = _session(proto).run(None, feed)
    want = _session(_as_float(proto)).run(None, feed)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _activation_step(v: torch.Tensor) -> float:
    """The largest uint8 step ONNX Runtime's dynamic quantisation can give a part of ``v``:
    (max(v, 0) - min(v, 0)) / 255 over all of it."""
    return float(v.max().clamp(min=0) - v.min().clamp(max=0)) / 255


def _weight_step(w: torch.Tensor) -> torch.Tensor:
    """Per row: symmetric int8 with reduce_range has at least 63 steps each side."""
    return w.abs().amax(1) / 63


def _product_bound(v, w, v_step):
    """|(v + dv)(W + dW)^T - v W^T| per output, given |dv| <= v_step / 2 and |dW| <= s / 2:
    the first-order terms and their product. Shape: v (..., K), w (N, K) -> (..., N)."""
    s = _weight_step(w)
    k = w.shape[1]
    return (s / 2 * v.abs().sum(-1, keepdim=True) + v_step / 2 * w.abs().sum(1)
            + k * s * v_step / 4)


def test_quantised_lstm_within_its_first_order_bound(tmp_path):
    model = make_model(cell_config("lstm", 3, 16), 2).double()
    float_model = make_model(cell_config("lstm", 3, 16), 2)  # the same seed: the same weights
    proto = export_onnx_int8(float_model, tmp_path / "int8.onnx", initial_state=False)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in proto.graph.node}
    x, _, feed = _feed(model, steps=12)
    feed["lengths"] = np.full(3, 12)
    got = _session(proto).run(None, feed)[0]
    # The float64 model step by step, with every gate pre-activation a leaf, so that dL/da
    # says how much a perturbation of each pre-activation moves L = sum(r * output).
    family, cell = family_of(model.config.layer.cell), model.config.layer.cell
    w = {n[:-3]: p for n, p in model.rnn.named_parameters()}
    xs = x.double().transpose(0, 1)  # (T, B, I)
    gx = family.input(xs, w, cell)
    state = family.make_state(*(t[0] for t in model.rnn.init_state(3)))
    leaves, hs, ys = [], [], []
    for t in range(xs.shape[0]):
        leaf = gx[t].detach().requires_grad_()
        hs.append(state.h)
        state = family.step(leaf, state, w, cell)
        leaves.append(leaf)
        ys.append(state.h)
    y = torch.stack(ys, 1)  # (B, T, H)
    out = model.head(y)
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    loss = (r * out).sum()
    grads = torch.autograd.grad(loss, leaves, retain_graph=True)
    h_all = torch.stack(hs).detach()
    bound = 0.0
    for t, g in enumerate(grads):
        delta = (_product_bound(xs[t], w["weight_ih"], _activation_step(xs))
                 + _product_bound(hs[t], w["weight_hh"], _activation_step(h_all)))
        bound += float((g.abs() * delta).sum())
    head = _product_bound(y.detach(), model.head.weight.detach(), _activation_step(y.detach()))
    bound += float((r.abs() * head).sum())
    error = abs(float((r.numpy() * got).sum()) - float(loss.detach()))
    # Twice the first-order bound covers the second-order terms at these step sizes; the floor
    # is float32 rounding of a sum of a few hundred outputs.
    assert 0 < error <= 2 * bound + 1e-4 * max(1.0, abs(float(loss)))


def test_refuses_an_int8_model(tmp_path):
    with pytest.raises(TypeError, match="expected the float model"):
        export_onnx_int8(quantize_dynamic(ZOO["plain"](), backend="reference"),
                         tmp_path / "m.onnx")
