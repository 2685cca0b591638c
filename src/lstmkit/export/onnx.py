"""Export a :class:`~lstmkit.models.SequenceModel` to ONNX.

Each layer becomes ONNX's own LSTM, GRU or RNN operator where its configuration maps onto one
(peepholes, coupled gates as ``input_forget``, ``cell_clip`` as ``clip``, the activations,
bidirectional, variable lengths through ``sequence_lens``, initial states), and a Scan over one
step otherwise (layer norm, projection, a removed gate, zoneout, and every sLSTM and mLSTM
layer, which no ONNX operator computes). An xLSTM block stack is exported by
:mod:`lstmkit.export.onnx_xlstm`. The graph is sequence-first
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
from lstmkit.activations import TABLE
from lstmkit.cells import family_of
from lstmkit.cells.base import uncovered
from lstmkit.config import CellConfig
from lstmkit.export.gates import order, permute
from lstmkit.io import atomic_write
from lstmkit.layers.xlstm_blocks import xLSTMConfig
from lstmkit.models import SequenceModel

OPSET = 17


def export_onnx(model: SequenceModel, path: str | Path, *, lengths: bool = True,
                initial_state: bool = True, native_operators: bool = True):
    """Write ``model`` to ``path`` as an ONNX model; returns the ModelProto.

    Args:
        model: the model (evaluation mode is used: no dropout, zoneout as its expectation).
        path: the .onnx file, written atomically.
        lengths: give the graph a ``lengths`` input (else every sequence is full length).
        initial_state: give the graph ``h0``/``c0`` inputs (else they are zeros).
        native_operators: use ONNX's LSTM/GRU/RNN operators where they compute a layer (else
            a Scan for every layer, whose matrix products graph tools can rewrite: see
            lstmkit.export.quantize).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected an lstmkit SequenceModel, got {type(model).__name__}")
    if isinstance(model.config.layer, xLSTMConfig):  # a block stack, not a layer of a family
        from lstmkit.export.onnx_xlstm import xLSTMExporter as exporter
        if model.config.layer.bidirectional:
            raise ValueError("model: a bidirectional xLSTM stack cannot be exported to ONNX yet "
                             "(the exporter writes the forward stack only)")
    else:
        family, exporter = family_of(model.config.layer.cell), _Exporter
        if family.onnx is None:
            raise ValueError(f"model: the {family.key!r} family has no ONNX mapping, so it cannot "
                             "be exported to ONNX")
    proto = exporter(model, onnx, lengths, initial_state, native_operators).build()
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))
    return proto


def uses_native_operator(cell: CellConfig, zoneout: float) -> bool:
    """Whether ONNX's LSTM/GRU/RNN operator computes this cell (else a Scan does)."""
    mapping = family_of(cell).onnx
    return (mapping.operator is not None and not zoneout
            and uncovered(cell, mapping.options) is None)


def _rows(g, valid: str, rank: int) -> str:
    """valid (B, 1) shaped to broadcast over a state (B, ...) of ``rank`` trailing axes."""
    if rank <= 1:
        return valid
    return g.op("Unsqueeze", valid, g.const(np.arange(2, rank + 1)))


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

    # What the families' Scan steps build with (cells/<family>.py ``onnx_step``).

    def act(self, name: str, v: str) -> str:
        """The activation ``name`` of lstmkit.activations, elementwise."""
        op, attrs = TABLE[name].element
        return self.op(op, v, **attrs)

    def gate_term(self, v: str, weight_t: str, bias: str | None = None,
                  ln: str | None = None) -> str:
        """``v W^T + b``, or ``LN(v W^T; γ) + b``; ``weight_t`` is W transposed."""
        term = self.op("MatMul", v, weight_t)
        if ln is not None:
            term = self.op("LayerNormalization", term, ln, axis=-1, epsilon=1e-5)
        return term if bias is None else self.op("Add", term, bias)

    def split(self, v: str, parts: int, size: int) -> list[str]:
        """``v`` cut into ``parts`` blocks of ``size`` along its last axis."""
        return self.op("Split", v, self.const(np.array([size] * parts)), axis=-1, outputs=parts)


class _Exporter:
    def __init__(self, model: SequenceModel, onnx, lengths: bool, initial_state: bool,
                 native_operators: bool = True):
        self.model, self.onnx, self.native_operators = model, onnx, native_operators
        self.config, self.layer = model.config, model.config.layer
        self.cell = getattr(self.layer, "cell", None)  # an xLSTM block stack has none
        self.family = None if self.cell is None else family_of(self.cell)
        self.with_lengths, self.with_state = lengths, initial_state
        self.g = _Graph(onnx)
        self.arrays = {k: v.detach().cpu().float().numpy()
                       for k, v in model.state_dict().items()}

    def build(self):
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        g, layer, cell = self.g, self.layer, self.cell
        directions = layer.num_directions
        inputs, x = self._input(cell.input_size)
        x = g.op("Transpose", x, perm=[1, 0, 2])  # (T, B, I)
        shape = g.op("Shape", x)
        self.steps, self.batch = (g.op("Gather", shape, g.const(np.array([k]))) for k in (0, 1))
        inputs += self._lengths()
        self.lens32 = g.op("Cast", self.lens, to=tp.INT32)
        spec = self.family.state(cell)
        state_names = tuple(f"{name}0" for name in spec)
        shapes = tuple(spec.values())
        if self.with_state:
            inputs += [helper.make_tensor_value_info(
                name, tp.FLOAT, [layer.num_layers * directions, "batch", *shape])
                for name, shape in zip(state_names, shapes)]
        finals = [[] for _ in state_names]
        for k in range(layer.num_layers):
            x, states = self._layer(k, x, state_names, shapes)
            for acc, s in zip(finals, states):
                acc.append(s)
        y = self._head(g.op("Transpose", x, perm=[1, 0, 2]))  # (B, T, D*P) -> head
        g.op("Identity", y, out=["output"])
        pooled = self.config.pooling != "none"
        out_shape = ["batch"] + ([] if pooled else ["time"]) + [self.config.output_size]
        outputs = [helper.make_tensor_value_info("output", tp.FLOAT, out_shape)]
        for name, acc, shape in zip(spec, finals, shapes):
            g.op("Concat", *acc, axis=0, out=[f"{name}_n"])
            outputs.append(helper.make_tensor_value_info(
                f"{name}_n", tp.FLOAT, [layer.num_layers * directions, "batch", *shape]))
        graph = helper.make_graph(g.nodes, "lstmkit", inputs, outputs, g.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="lstmkit")

    def _input(self, width: int):
        """The graph's ``input`` ((B, T, width) floats, or (B, T) token ids and the embedding):
        ([its value info], x (B, T, I))."""
        helper, tp, g = self.onnx.helper, self.onnx.TensorProto, self.g
        if self.config.vocab_size:
            info = helper.make_tensor_value_info("input", tp.INT64, ["batch", "time"])
            return [info], g.op("Gather", g.const(self.arrays["embedding.weight"], "embedding"),
                                "input")
        return [helper.make_tensor_value_info("input", tp.FLOAT, ["batch", "time", width])], "input"

    def _lengths(self) -> list:
        """Sets ``lens`` (B,): the ``lengths`` input (its value info returned), or every
        sequence full length (``steps`` and ``batch`` set first)."""
        if not self.with_lengths:
            self.lens = self.g.op("Expand", self.steps, self.batch)  # (B,) all full length
            return []
        self.lens = "lengths"
        return [self.onnx.helper.make_tensor_value_info("lengths", self.onnx.TensorProto.INT64,
                                                        ["batch"])]

    # --- one layer ---------------------------------------------------------------------------

    def _initial(self, state_names, shapes, start: int, stop: int) -> list[str]:
        """Rows start:stop of each initial state (stop - start, B, ...), zeros without input."""
        g = self.g
        if self.with_state:
            return [g.op("Slice", name, g.const(np.array([start])), g.const(np.array([stop])),
                         g.const(np.array([0]))) for name in state_names]
        return [g.op("ConstantOfShape", g.op("Concat", g.const(np.array([stop - start])),
                                             self.batch, g.const(np.array(shape)), axis=0),
                     value=self.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
                for shape in shapes]

    def _weights(self, k: int, direction: int) -> dict[str, np.ndarray]:
        suffix = f"_l{k}" + ("_reverse" if direction else "")
        return {name[4:-len(suffix)]: a for name, a in self.arrays.items()
                if name.startswith("rnn.") and name.endswith(suffix)}

    def _layer(self, k: int, x: str, state_names, shapes):
        cell, directions = self.layer.layer_cell(k), self.layer.num_directions
        if self.native_operators and uses_native_operator(cell, self.layer.zoneout):
            initial = self._initial(state_names, shapes, k * directions, (k + 1) * directions)
            return self._native(cell, k, x, initial)
        outputs, finals = [], [[] for _ in state_names]
        for d in range(directions):
            row = k * directions + d
            s0 = [self.g.op("Squeeze", s, self.g.const(np.array([0])))
                  for s in self._initial(state_names, shapes, row, row + 1)]
            y, states = self._scan(cell, self._weights(k, d), x, s0, reverse=d == 1)
            outputs.append(y)
            for acc, s in zip(finals, states):
                acc.append(self.g.op("Unsqueeze", s, self.g.const(np.array([0]))))
        y = outputs[0] if directions == 1 else self.g.op("Concat", *outputs, axis=-1)
        return y, [a[0] if directions == 1 else self.g.op("Concat", *a, axis=0) for a in finals]

    def _native(self, cell: CellConfig, k: int, x: str, initial: list[str]):
        g, directions, mapping = self.g, self.layer.num_directions, self.family.onnx
        per = [self._weights(k, d) for d in range(directions)]
        blocks = order(self.family.gates, mapping.gates)
        w = g.const(np.stack([permute(p["weight_ih"], blocks) for p in per]), "W")
        r = g.const(np.stack([permute(p["weight_hh"], blocks) for p in per]), "R")
        b = "" if not cell.bias else g.const(np.stack([np.concatenate(
            [permute(p["bias_ih"], blocks), permute(p["bias_hh"], blocks)]) for p in per]), "B")
        attrs = {"hidden_size": cell.hidden_size,
                 "direction": "bidirectional" if directions == 2 else "forward",
                 **mapping.attributes(cell, directions)}
        extra = [g.const(np.stack([permute(p[name], order(source, target)) for p in per]), name)
                 if name in per[0] else "" for name, source, target in mapping.extra_inputs]
        ins = [x, w, r, b, self.lens32, *initial, *extra]
        y, *finals = g.op(mapping.operator, *ins, outputs=1 + len(initial), **attrs)
        y = g.op("Transpose", y, perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
        return g.op("Reshape", y, g.const(np.array([0, 0, -1]))), finals

    def _scan(self, cell: CellConfig, w: dict, x: str, s0: list[str], reverse: bool):
        g, helper, tp = self.g, self.onnx.helper, self.onnx.TensorProto
        if reverse:
            x = g.op("ReverseSequence", x, self.lens, batch_axis=1, time_axis=0)
        body = _Graph(self.onnx, prefix=g.name("body") + "/")
        mapping = self.family.onnx
        arrays = mapping.arrays(cell, w) if mapping.arrays else {
            name: a.T if a.ndim == 2 else a for name, a in w.items()}
        outer = {name: g.const(a, name) for name, a in arrays.items()}
        state_in = [body.name(f"s{k}") for k in range(len(s0))]
        x_t, m_t = body.name("x_t"), body.name("m_t")
        new = mapping.step(body, cell, outer, state_in, x_t)
        out, new = new if self.family.step_output else (None, new)
        z = self.layer.zoneout
        if z:  # evaluation: the expectation of zoneout's mask
            new = [body.op("Add", body.op("Mul", prev, body.const(np.float32(z))),
                           body.op("Mul", cur, body.const(np.float32(1 - z))))
                   for prev, cur in zip(state_in, new)]
        valid = body.op("Cast", m_t, to=tp.BOOL)  # (B, 1)
        ranks = [len(shape) for shape in self.family.state_shapes(cell)] + [1, 1]
        state_out = [body.op("Where", _rows(body, valid, rank), cur, prev)
                     for prev, cur, rank in zip(state_in, new, ranks)]
        y_t = body.op("Mul", state_out[0] if out is None else out, m_t)
        info = [helper.make_tensor_value_info(n, tp.FLOAT, [None] * (1 + rank))  # each (B, ...)
                for n, rank in zip((*state_in, x_t, m_t), ranks)]
        out_info = [helper.make_tensor_value_info(n, tp.FLOAT, [None] * (1 + rank))
                    for n, rank in zip((*state_out, y_t), ranks[:len(state_out)] + [1])]
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
