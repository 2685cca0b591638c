"""Export a :class:`~lstmkit.models.SequenceModel` to ONNX.

Each layer becomes ONNX's own LSTM, GRU or RNN operator where its configuration maps onto one
(peepholes, coupled gates as ``input_forget``, ``cell_clip`` as ``clip``, the activations,
bidirectional, variable lengths through ``sequence_lens``, initial states), and a Scan over one
step otherwise (layer norm, projection, a removed gate, zoneout). The graph is sequence-first
inside (ONNX Runtime rejects ``layout=1``) and batch-first at its edges, like the model.

Graph inputs: ``input`` (batch, time, I) floats or (batch, time) int64 token ids; ``lengths``
(batch,) int64 in 1..time; ``h0`` (L*D, batch, P) and, for an LSTM, ``c0`` (L*D, batch, H).
Outputs: ``output`` (batch, time, O), or (batch, O) when pooled; ``h_n`` and ``c_n`` as h0, c0.
Batch and time are dynamic. Weights are written as float32.

Legend: T time, B batch, K a layer's input width, H hidden, P output (proj_size or H), G gates,
D directions, L layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit._optional import require
from lstmkit.activations import ONNX_NAMES
from lstmkit.config import CellConfig
from lstmkit.export.gates import PEEPHOLE_TO_ONNX, TO_ONNX, permute
from lstmkit.io import atomic_write
from lstmkit.models import SequenceModel

OPSET = 17
_ELEMENT_OPS = {  # activation -> (ONNX operator, attributes), with lstmkit's parameters
    "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "relu": ("Relu", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}), "softsign": ("Softsign", {}),
    "softplus": ("Softplus", {}), "elu": ("Elu", {"alpha": 1.0}),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.01}), "identity": ("Identity", {}),
}


def export_onnx(model: SequenceModel, path: str | Path, *, lengths: bool = True,
                initial_state: bool = True):
    """Write ``model`` to ``path`` as an ONNX model; returns the ModelProto.

    Args:
        model: the model (evaluation mode is used: no dropout, zoneout as its expectation).
        path: the .onnx file, written atomically.
        lengths: give the graph a ``lengths`` input (else every sequence is full length).
        initial_state: give the graph ``h0``/``c0`` inputs (else they are zeros).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected an lstmkit SequenceModel, got {type(model).__name__}")
    proto = _Exporter(model, onnx, lengths, initial_state).build()
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    return proto


_SCAN_ONLY_ACTIVATIONS = frozenset({
    "identity",  # Runtime's Affine defaults to the constant 0 and needs explicit alpha, beta
    "softplus",  # Runtime's recurrent Softplus overflows to inf above about 88 in float32
})
"""Activations the recurrent operators do not compute as lstmkit does over every input; the
elementwise operators of a Scan body do."""


def uses_native_operator(cell: CellConfig, zoneout: float) -> bool:
    """Whether ONNX's LSTM/GRU/RNN operator computes this cell (else a Scan does)."""
    if zoneout:
        return False
    if cell.mode != "lstm":
        return True
    activations = {cell.gate_activation, cell.cell_activation, cell.output_activation}
    return not (cell.layer_norm or cell.proj_size or not cell.input_gate
                or not cell.forget_gate or not cell.output_gate
                or activations & _SCAN_ONLY_ACTIVATIONS)


class _Graph:
    """Nodes and initializers of one graph, with fresh names."""

    def __init__(self, onnx, prefix: str = ""):
        self.onnx, self.prefix, self.count = onnx, prefix, 0
        self.nodes, self.initializers = [], []

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def const(self, array, hint: str = "const") -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, out=None, **attrs):
        names = out or [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if len(names) == 1 else names


class _Exporter:
    def __init__(self, model: SequenceModel, onnx, lengths: bool, initial_state: bool):
        self.model, self.onnx = model, onnx
        self.config, self.layer = model.config, model.config.layer
        self.cell = self.layer.cell
        self.with_lengths, self.with_state = lengths, initial_state
        self.g = _Graph(onnx)
        self.arrays = {k: v.detach().cpu().float().numpy()
                       for k, v in model.state_dict().items()}

    def build(self):
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        g, layer, cell = self.g, self.layer, self.cell
        directions, width = layer.num_directions, cell.output_size
        if self.config.vocab_size:
            inputs = [helper.make_tensor_value_info("input", tp.INT64, ["batch", "time"])]
            x = g.op("Gather", g.const(self.arrays["embedding.weight"], "embedding"), "input")
        else:
            inputs = [helper.make_tensor_value_info("input", tp.FLOAT,
                                                    ["batch", "time", cell.input_size])]
            x = "input"
        x = g.op("Transpose", x, perm=[1, 0, 2])  # (T, B, I)
        shape = g.op("Shape", x)
        self.steps, self.batch = (g.op("Gather", shape, g.const(np.array([k]))) for k in (0, 1))
        if self.with_lengths:
            inputs.append(helper.make_tensor_value_info("lengths", tp.INT64, ["batch"]))
            self.lens = "lengths"
        else:
            self.lens = g.op("Expand", self.steps, self.batch)  # (B,) all full length
        self.lens32 = g.op("Cast", self.lens, to=tp.INT32)
        state_names = ("h0", "c0")[:2 if cell.mode == "lstm" else 1]
        sizes = (width, cell.hidden_size)
        if self.with_state:
            inputs += [helper.make_tensor_value_info(
                name, tp.FLOAT, [layer.num_layers * directions, "batch", sizes[k]])
                for k, name in enumerate(state_names)]
        finals = [[] for _ in state_names]
        for k in range(layer.num_layers):
            x, states = self._layer(k, x, state_names, sizes)
            for acc, s in zip(finals, states):
                acc.append(s)
        y = self._head(g.op("Transpose", x, perm=[1, 0, 2]))  # (B, T, D*P) -> head
        g.op("Identity", y, out=["output"])
        pooled = self.config.pooling != "none"
        out_shape = ["batch"] + ([] if pooled else ["time"]) + [self.config.output_size]
        outputs = [helper.make_tensor_value_info("output", tp.FLOAT, out_shape)]
        for name, acc, size in zip(("h_n", "c_n"), finals, sizes):
            g.op("Concat", *acc, axis=0, out=[name])
            outputs.append(helper.make_tensor_value_info(
                name, tp.FLOAT, [layer.num_layers * directions, "batch", size]))
        graph = helper.make_graph(g.nodes, "lstmkit", inputs, outputs, g.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="lstmkit")

    # --- one layer ---------------------------------------------------------------------------

    def _initial(self, state_names, sizes, start: int, stop: int) -> list[str]:
        """Rows start:stop of each initial state (stop - start, B, size), zeros without input."""
        g = self.g
        if self.with_state:
            return [g.op("Slice", name, g.const(np.array([start])), g.const(np.array([stop])),
                         g.const(np.array([0]))) for name in state_names]
        return [g.op("ConstantOfShape", g.op("Concat", g.const(np.array([stop - start])),
                                             self.batch, g.const(np.array([size])), axis=0),
                     value=self.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
                for size in sizes[:len(state_names)]]

    def _weights(self, k: int, direction: int) -> dict[str, np.ndarray]:
        suffix = f"_l{k}" + ("_reverse" if direction else "")
        return {name[4:-len(suffix)]: a for name, a in self.arrays.items()
                if name.startswith("rnn.") and name.endswith(suffix)}

    def _layer(self, k: int, x: str, state_names, sizes):
        cell, directions = self.layer.layer_cell(k), self.layer.num_directions
        if uses_native_operator(cell, self.layer.zoneout):
            initial = self._initial(state_names, sizes, k * directions, (k + 1) * directions)
            return self._native(cell, k, x, initial)
        outputs, finals = [], [[] for _ in state_names]
        for d in range(directions):
            row = k * directions + d
            s0 = [self.g.op("Squeeze", s, self.g.const(np.array([0])))
                  for s in self._initial(state_names, sizes, row, row + 1)]
            y, states = self._scan(cell, self._weights(k, d), x, s0, reverse=d == 1)
            outputs.append(y)
            for acc, s in zip(finals, states):
                acc.append(self.g.op("Unsqueeze", s, self.g.const(np.array([0]))))
        y = outputs[0] if directions == 1 else self.g.op("Concat", *outputs, axis=-1)
        return y, [a[0] if directions == 1 else self.g.op("Concat", *a, axis=0) for a in finals]

    def _native(self, cell: CellConfig, k: int, x: str, initial: list[str]):
        g, directions, hidden = self.g, self.layer.num_directions, cell.hidden_size
        per = [self._weights(k, d) for d in range(directions)]
        blocks = TO_ONNX[cell.mode]
        w = g.const(np.stack([permute(p["weight_ih"], blocks) for p in per]), "W")
        r = g.const(np.stack([permute(p["weight_hh"], blocks) for p in per]), "R")
        b = "" if not cell.bias else g.const(np.stack([np.concatenate(
            [permute(p["bias_ih"], blocks), permute(p["bias_hh"], blocks)]) for p in per]), "B")
        attrs = {"hidden_size": hidden,
                 "direction": "bidirectional" if directions == 2 else "forward"}
        if cell.mode == "lstm":
            names = (cell.gate_activation, cell.cell_activation, cell.output_activation)
            attrs["activations"] = [ONNX_NAMES[n] for n in names] * directions
            attrs["input_forget"] = int(cell.coupled)
            if cell.cell_clip is not None:
                attrs["clip"] = float(cell.cell_clip)
            peep = "" if not cell.peephole else g.const(np.stack(
                [permute(p["weight_peephole"], PEEPHOLE_TO_ONNX) for p in per]), "P")
            ins = [x, w, r, b, self.lens32, *initial, peep]
        elif cell.mode == "gru":
            attrs["linear_before_reset"] = int(cell.reset_after)
            ins = [x, w, r, b, self.lens32, *initial]
        else:
            attrs["activations"] = [cell.nonlinearity.capitalize()] * directions
            ins = [x, w, r, b, self.lens32, *initial]
        count = 3 if cell.mode == "lstm" else 2
        y, *finals = g.op(cell.mode.upper(), *ins, outputs=count, **attrs)
        y = g.op("Transpose", y, perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
        return g.op("Reshape", y, g.const(np.array([0, 0, -1]))), finals

    def _scan(self, cell: CellConfig, w: dict, x: str, s0: list[str], reverse: bool):
        g, helper, tp = self.g, self.onnx.helper, self.onnx.TensorProto
        if reverse:
            x = g.op("ReverseSequence", x, self.lens, batch_axis=1, time_axis=0)
        body = _Graph(self.onnx, prefix=g.name("body") + "/")
        outer = {name: g.const(a.T if name in ("weight_ih", "weight_hh", "weight_hr") else a,
                               name) for name, a in w.items()}
        state_in = [body.name(f"s{k}") for k in range(len(s0))]
        x_t, m_t = body.name("x_t"), body.name("m_t")
        new = _STEPS[cell.mode](body, cell, outer, state_in, x_t)
        z = self.layer.zoneout
        if z:  # evaluation: the expectation of zoneout's mask
            new = [body.op("Add", body.op("Mul", prev, body.const(np.float32(z))),
                           body.op("Mul", cur, body.const(np.float32(1 - z))))
                   for prev, cur in zip(state_in, new)]
        valid = body.op("Cast", m_t, to=tp.BOOL)
        state_out = [body.op("Where", valid, cur, prev) for prev, cur in zip(state_in, new)]
        y_t = body.op("Mul", state_out[0], m_t)
        info = [helper.make_tensor_value_info(n, tp.FLOAT, [None, None])  # each (B, size)
                for n in (*state_in, x_t, m_t)]
        out_info = [helper.make_tensor_value_info(n, tp.FLOAT, [None, None])
                    for n in (*state_out, y_t)]
        graph = helper.make_graph(body.nodes, body.prefix + "step", info, out_info,
                                  body.initializers)
        *finals, y = g.op("Scan", *s0, x, self._mask(), outputs=len(s0) + 1, body=graph,
                          num_scan_inputs=2)
        if reverse:
            y = g.op("ReverseSequence", y, self.lens, batch_axis=1, time_axis=0)
        return y, finals

    def _mask(self) -> str:
        """(T, B, 1) float: 1 at steps within each sequence's length, else 0."""
        if not hasattr(self, "_mask_name"):
            g, tp = self.g, self.onnx.TensorProto
            t = g.op("Range", g.const(np.int64(0)),
                     g.op("Squeeze", self.steps, g.const(np.array([0]))), g.const(np.int64(1)))
            valid = g.op("Less", g.op("Unsqueeze", t, g.const(np.array([1]))),
                         g.op("Unsqueeze", self.lens, g.const(np.array([0]))))  # (T, B)
            self._mask_name = g.op("Unsqueeze", g.op("Cast", valid, to=tp.FLOAT),
                                   g.const(np.array([2])))
        return self._mask_name

    # --- pooling and head --------------------------------------------------------------------

    def _head(self, y: str) -> str:
        """Pool y (B, T, F) over valid steps as the model does, then the linear head."""
        g, pooling, tp = self.g, self.config.pooling, self.onnx.TensorProto
        if pooling == "last":
            index = g.op("Unsqueeze", g.op("Sub", self.lens, g.const(np.array(1))),
                         g.const(np.array([1])))  # (B, 1)
            last = g.op("GatherND", y, index, batch_dims=1)  # (B, F)
            if self.layer.bidirectional:  # the reverse direction ends its pass at step 0
                half = self.cell.output_size
                first = g.op("Gather", y, g.const(np.array(0)), axis=1)
                last = g.op("Concat", self._cols(last, 0, half), self._cols(first, half, 2 * half),
                            axis=-1)
            y = last
        elif pooling == "mean":  # y is zero past each length
            total = g.op("ReduceSum", y, g.const(np.array([1])), keepdims=0)
            count = g.op("Unsqueeze", g.op("Cast", self.lens, to=tp.FLOAT),
                         g.const(np.array([1])))
            y = g.op("Div", total, count)
        elif pooling == "max":
            valid = g.op("Transpose", g.op("Cast", self._mask(), to=tp.BOOL), perm=[1, 0, 2])
            masked = g.op("Where", valid, y, g.const(np.float32(-np.inf)))
            y = g.op("ReduceMax", masked, axes=[1], keepdims=0)
        weight = g.const(self.arrays["head.weight"].T, "head_weight")
        return g.op("Add", g.op("MatMul", y, weight), g.const(self.arrays["head.bias"], "head_b"))

    def _cols(self, v: str, start: int, stop: int) -> str:
        g = self.g
        return g.op("Slice", v, g.const(np.array([start])), g.const(np.array([stop])),
                    g.const(np.array([-1])))


# --- one step of each family, for Scan bodies ------------------------------------------------

def _act(body: _Graph, name: str, v: str) -> str:
    op, attrs = _ELEMENT_OPS[name]
    return body.op(op, v, **attrs)


def _gate_term(body: _Graph, v: str, weight_t: str, bias: str | None, ln: str | None) -> str:
    term = body.op("MatMul", v, weight_t)
    if ln is not None:
        term = body.op("LayerNormalization", term, ln, axis=-1, epsilon=1e-5)
    return term if bias is None else body.op("Add", term, bias)


def _split(body: _Graph, v: str, parts: int, size: int) -> list[str]:
    return body.op("Split", v, body.const(np.array([size] * parts)), axis=-1, outputs=parts)


def _lstm_step(body: _Graph, cell: CellConfig, w: dict, state: list[str], x: str) -> list[str]:
    h, c = state
    hidden = cell.hidden_size
    a = body.op("Add", _gate_term(body, x, w["weight_ih"], w.get("bias_ih"),
                                  w.get("weight_ln_ih")),
                _gate_term(body, h, w["weight_hh"], w.get("bias_hh"), w.get("weight_ln_hh")))
    a_i, a_f, a_g, a_o = _split(body, a, 4, hidden)
    if cell.peephole:
        p_i, p_f, p_o = _split(body, w["weight_peephole"], 3, hidden)
        a_i, a_f = (body.op("Add", a_, body.op("Mul", p, c)) for a_, p in ((a_i, p_i), (a_f, p_f)))
    clip = cell.cell_clip

    def gate(v, activation, present=True):
        if not present:
            return None  # a removed gate is fixed to 1
        if clip is not None:
            v = body.op("Clip", v, body.const(np.float32(-clip)), body.const(np.float32(clip)))
        return _act(body, activation, v)

    i = gate(a_i, cell.gate_activation, cell.input_gate)
    if cell.coupled:
        f = body.op("Sub", body.const(np.float32(1.0)), i)
    else:
        f = gate(a_f, cell.gate_activation, cell.forget_gate)
    g = gate(a_g, cell.cell_activation)
    kept = c if f is None else body.op("Mul", f, c)
    c_new = body.op("Add", kept, g if i is None else body.op("Mul", i, g))
    if cell.peephole:
        a_o = body.op("Add", a_o, body.op("Mul", p_o, c_new))
    o = gate(a_o, cell.gate_activation, cell.output_gate)
    c_out = c_new
    if cell.layer_norm:
        c_out = body.op("LayerNormalization", c_new, w["weight_ln_c"], w["bias_ln_c"], axis=-1,
                        epsilon=1e-5)
    h_new = _act(body, cell.output_activation, c_out)
    if o is not None:
        h_new = body.op("Mul", o, h_new)
    if "weight_hr" in w:
        h_new = body.op("MatMul", h_new, w["weight_hr"])
    return [h_new, c_new]


def _gru_step(body: _Graph, cell: CellConfig, w: dict, state: list[str], x: str) -> list[str]:
    (h,), hidden = state, cell.hidden_size
    x_r, x_z, x_n = _split(body, _gate_term(body, x, w["weight_ih"], w.get("bias_ih"), None), 3,
                           hidden)
    w_r, w_z, w_n = body.op("Split", w["weight_hh"], body.const(np.array([hidden] * 3)), axis=1,
                            outputs=3)  # columns of the transposed (P, 3H) weight
    b_r, b_z, b_n = _split(body, w["bias_hh"], 3, hidden) if "bias_hh" in w else (None,) * 3
    r = body.op("Sigmoid", body.op("Add", x_r, _gate_term(body, h, w_r, b_r, None)))
    z = body.op("Sigmoid", body.op("Add", x_z, _gate_term(body, h, w_z, b_z, None)))
    if cell.reset_after:
        inner = body.op("Mul", r, _gate_term(body, h, w_n, b_n, None))
    else:
        inner = _gate_term(body, body.op("Mul", r, h), w_n, b_n, None)
    n = body.op("Tanh", body.op("Add", x_n, inner))
    keep = body.op("Sub", body.const(np.float32(1.0)), z)
    return [body.op("Add", body.op("Mul", keep, n), body.op("Mul", z, h))]


def _rnn_step(body: _Graph, cell: CellConfig, w: dict, state: list[str], x: str) -> list[str]:
    a = body.op("Add", _gate_term(body, x, w["weight_ih"], w.get("bias_ih"), None),
                _gate_term(body, state[0], w["weight_hh"], w.get("bias_hh"), None))
    return [_act(body, cell.nonlinearity, a)]


_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}
