"""The variants' semantics against an independent implementation: ONNX Runtime's LSTM and GRU.

ONNX Runtime computes peepholes, ``input_forget``, ``clip``, the ``activations`` attribute,
``sequence_lens`` and ``linear_before_reset``; torch.nn computes none of the LSTM ones. Where
Runtime departs from, or fills a gap in, the written ONNX specification, the test says so.
Runtime's recurrent operators run in float32 only, so lstmkit runs in float64 on the same
float32-rounded numbers and the comparison uses the float32 tolerance.

The gate-order converters below are private to these tests (the exporter will have its own).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close

import lstmkit
from lstmkit.activations import ACTIVATIONS, ONNX_NAMES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

IN, H, T, B = 3, 4, 5, 3
LENGTHS = torch.tensor([5, 2, 4])

# Block orders: position k of the target layout takes block ORDER[k] of the source.
LSTM_TO_ONNX = (0, 3, 1, 2)  # torch i, f, g, o -> ONNX i, o, f, c
LSTM_FROM_ONNX = (0, 2, 3, 1)
PEEPHOLE_TO_ONNX = (0, 2, 1)  # lstmkit i, f, o -> ONNX i, o, f (its own inverse)
GRU_TO_ONNX = (1, 0, 2)  # torch r, z, n -> ONNX z, r, h (its own inverse)


def reorder(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``t``'s equal blocks along dim 0, in ``order``."""
    blocks = t.chunk(len(order))
    return torch.cat([blocks[k] for k in order])


@pytest.mark.parametrize("to, back", [(LSTM_TO_ONNX, LSTM_FROM_ONNX),
                                      (PEEPHOLE_TO_ONNX, PEEPHOLE_TO_ONNX),
                                      (GRU_TO_ONNX, GRU_TO_ONNX)])
def test_gate_order_converters_round_trip(to, back):
    t = torch.arange(len(to) * 2 * 3.0).reshape(len(to) * 2, 3)
    assert torch.equal(reorder(reorder(t, to), back), t)
    assert not torch.equal(reorder(t, to), t)


def test_lstm_converter_names_the_gates():
    named = torch.tensor([ord(g) for g in "ifgo"], dtype=torch.float64)
    assert "".join(chr(int(v)) for v in reorder(named, LSTM_TO_ONNX)) == "iofg"  # ONNX's c is g
    named = torch.tensor([ord(g) for g in "rzn"], dtype=torch.float64)
    assert "".join(chr(int(v)) for v in reorder(named, GRU_TO_ONNX)) == "zrn"


def onnx_weights(layer: lstmkit.LSTM | lstmkit.GRU) -> dict[str, np.ndarray]:
    """W, R, B (and P) of a one-layer lstmkit layer, stacked over directions, in ONNX's layout."""
    order = LSTM_TO_ONNX if layer.mode == "LSTM" else GRU_TO_ONNX
    per_direction = {"W": [], "R": [], "B": [], "P": []}
    for w in layer.cell_weights()[0]:
        per_direction["W"].append(reorder(w["weight_ih"], order))
        per_direction["R"].append(reorder(w["weight_hh"], order))
        per_direction["B"].append(torch.cat([reorder(w["bias_ih"], order),
                                             reorder(w["bias_hh"], order)]))
        if w.get("weight_peephole") is not None:
            per_direction["P"].append(reorder(w["weight_peephole"], PEEPHOLE_TO_ONNX))
    return {k: np.stack([t.detach().float().numpy() for t in v])
            for k, v in per_direction.items() if v}


def run_onnxruntime(op: str, inputs: dict[str, np.ndarray], **attributes):
    """Run one ONNX recurrent node on Runtime's CPU provider; returns its three (or two)
    outputs."""
    from onnx import TensorProto, helper

    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    names = names if op == "LSTM" else names[:6]
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, [n if n in inputs else "" for n in names], outputs, **attributes)
    kind = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    graph = helper.make_graph(
        [node], "recurrent",
        [helper.make_tensor_value_info(n, kind[inputs[n].dtype], inputs[n].shape)
         for n in names if n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a).double() for a in session.run(None, inputs)]


def float32_exact(layer: torch.nn.Module) -> None:
    """Round the parameters to float32 values, so both sides start from the same numbers."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(p.float().double())


def compare(layer, op: str, with_lengths: bool, **attributes):
    """Run ``layer`` (one layer, float64) and the ONNX node on the same input and state."""
    float32_exact(layer)
    d = layer.config.num_directions
    x = torch.randn(T, B, IN).double()
    state = [torch.randn(d, B, H).double() for _ in range(2 if op == "LSTM" else 1)]
    inputs = {"X": x.float().numpy(), **onnx_weights(layer),
              "initial_h": state[0].float().numpy()}
    if op == "LSTM":
        inputs["initial_c"] = state[1].float().numpy()
    if with_lengths:
        inputs["sequence_lens"] = LENGTHS.int().numpy()
    direction = "bidirectional" if d == 2 else "forward"
    y, *finals = run_onnxruntime(op, inputs, hidden_size=H, direction=direction, **attributes)
    with torch.no_grad():
        hx = lstmkit.LSTMState(*state) if op == "LSTM" else state[0]
        y_kit, state_kit = layer(x, hx, lengths=LENGTHS if with_lengths else None)
    y = y.permute(0, 2, 1, 3).reshape(T, B, d * H)  # (T, D, B, H) -> (T, B, D*H)
    assert_close(y_kit, y, torch.float32, msg="Y")
    for name, a, e in zip(("Y_h", "Y_c"), state_kit if op == "LSTM" else [state_kit], finals):
        assert_close(a, e, torch.float32, msg=name)


LSTM_CASES = {
    "plain": ({}, {}),
    "peephole": ({"peephole": True}, {}),
    # Runtime's input_forget computes f = 1 - i (the input gate keeps its parameters); the
    # specification only says "couple the input and forget gates".
    "coupled": ({"coupled": True}, {"input_forget": 1}),
    # Runtime clips each gate's whole pre-activation, peephole term included, before its
    # activation, as the specification's "applied to the input of activations" reads.
    "clip": ({"cell_clip": 0.4}, {"clip": 0.4}),
    "peephole_clip": ({"peephole": True, "cell_clip": 0.3}, {"clip": 0.3}),
    "peephole_coupled_clip": ({"peephole": True, "coupled": True, "cell_clip": 0.5},
                              {"clip": 0.5, "input_forget": 1}),
}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("options, attributes", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_matches_onnxruntime(options, attributes, bidirectional, with_lengths):
    layer = lstmkit.LSTM(IN, H, bidirectional=bidirectional, dtype=torch.float64, **options)
    with torch.no_grad():  # larger weights, so clipping and peepholes change the result
        for p in layer.parameters():
            p.mul_(3.0)
    compare(layer, "LSTM", with_lengths, **attributes)


ACTIVATION_CASES = [("hard_sigmoid", "relu", "softsign"), ("sigmoid", "softplus", "elu"),
                    ("hard_sigmoid", "leaky_relu", "tanh"), ("sigmoid", "tanh", "identity")]


@pytest.mark.parametrize("activations", ACTIVATION_CASES, ids="-".join)
def test_lstm_activations_match_onnxruntime(activations):
    assert {a for case in ACTIVATION_CASES for a in case} == set(ACTIVATIONS)
    gate, cell, output = activations
    layer = lstmkit.LSTM(IN, H, dtype=torch.float64, peephole=True, gate_activation=gate,
                         cell_activation=cell, output_activation=output)
    # Runtime's Affine (lstmkit's identity) defaults to alpha 0, beta 0: the constant 0. ONNX
    # has no Affine operator whose defaults it could take, so alpha 1, beta 0 go explicitly
    # (alphas are consumed in order by the activations that take one).
    explicit = ({"activation_alpha": [1.0], "activation_beta": [0.0]}
                if "identity" in activations else {})
    compare(layer, "LSTM", False, activations=[ONNX_NAMES[a] for a in activations], **explicit)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_onnxruntime(reset_after, with_lengths, bidirectional):
    layer = lstmkit.GRU(IN, H, bidirectional=bidirectional, dtype=torch.float64,
                        reset_after=reset_after)
    compare(layer, "GRU", with_lengths, linear_before_reset=int(reset_after))
