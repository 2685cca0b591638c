"""ONNX export of a :class:`~lstmkit.models.SequenceModel` whose stack is an xLSTM block stack
(:mod:`lstmkit.layers.xlstm_blocks`): the blocks' projections, norms and causal convolutions as
plain operators, each block's recurrence as a Scan over the cell's step (the same ONNX step as
the sLSTM and mLSTM layers, :func:`lstmkit.cells.slstm.onnx_pointwise` and
:func:`lstmkit.cells.mlstm.onnx_recurrence`). Every mLSTM form computes one function; the graph
steps the recurrent one.

The graph stays batch-first (the Scans run over axis 1). Inputs: ``input`` and ``lengths`` as
:mod:`lstmkit.export.onnx` has them, and per block b and part p of its state (``conv``, the
convolution's last K - 1 inputs (batch, K - 1, F), then the cell's: h, c, n, m (batch, E) for an
sLSTM block; C (batch, NH, D, D), n (batch, NH, D), m (batch, NH) for an mLSTM block) an input
``b{b}_{p}0``; outputs ``output`` and ``b{b}_{p}_n``. A state passed back in continues the
sequence, so step-by-step calls equal one call.

Legend: B batch, T time, E the stack's width, U the mLSTM block's inner width, F a
convolution's width, NH heads, D units per head, K the convolution's kernel size.
"""

from __future__ import annotations

import numpy as np
from torch.utils._pytree import tree_flatten

from lstmkit.cells import slstm as slstm_cell
from lstmkit.cells.mlstm import onnx_recurrence
from lstmkit.export.onnx import OPSET, _Exporter, _Graph, _rows

LN_EPS = 1e-5
MLSTM_EPS = 1e-6
"""The block's mLSTM eps (the functional mLSTM's default, which the blocks use)."""


def headwise_dense(weight: np.ndarray) -> np.ndarray:
    """A HeadwiseLinear's weight (NH, D_out, D_in) as one block-diagonal matrix for ``x @ M``:
    row h D + d, column h D + o holds weight[h, o, d]."""
    NH, D_out, D_in = weight.shape
    dense = np.zeros((NH, D_in, NH, D_out), weight.dtype)
    for h in range(NH):
        dense[h, :, h] = weight[h].T
    return dense.reshape(NH * D_in, NH * D_out)


def state_names(model) -> list[tuple[str, tuple[int, ...]]]:
    """(graph name stem, trailing shape) of each part of the stack's state, in the order of
    its leaves: ``b{b}_conv``, then the cell's parts by their field names."""
    parts = []
    for b, block in enumerate(model.rnn.init_state(1)):
        fields = ("conv",) + tuple(type(block.cell)._fields)
        leaves = tree_flatten(block)[0]
        parts += [(f"b{b}_{name}", tuple(t.shape[1:])) for name, t in zip(fields, leaves)]
    return parts


class xLSTMExporter(_Exporter):
    """The graph of a SequenceModel with an xLSTM block stack (see the module docstring)."""

    def build(self):
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        g, layer = self.g, self.layer
        inputs, x = self._input(layer.input_size)  # batch-first throughout
        shape = g.op("Shape", x)
        self.batch, self.steps = (g.op("Gather", shape, g.const(np.array([k]))) for k in (0, 1))
        inputs += self._lengths()
        self.valid = g.op("Transpose", self._mask(), perm=[1, 0, 2])  # (B, T, 1) float
        valid = g.op("Cast", self.valid, to=tp.BOOL)
        x = g.op("Where", valid, x, g.const(np.float32(0.0)))  # NaN in padding reaches nothing
        if "rnn.proj_in.weight" in self.arrays:
            x = self._linear(x, "rnn.proj_in")
        parts = state_names(self.model)
        if self.with_state:
            inputs += [helper.make_tensor_value_info(f"{name}0", tp.FLOAT, ["batch", *shape])
                       for name, shape in parts]
        initial, finals = iter(self._initial(parts)), []
        for b in range(layer.num_blocks):
            block = self._slstm_block if b in layer.slstm_at else self._mlstm_block
            x, state = block(b, x, initial)
            finals += state
        y = g.op("Where", valid, self._norm(x, "rnn.post_norm.weight"), g.const(np.float32(0.0)))
        g.op("Identity", self._head(y), out=["output"])
        pooled = self.config.pooling != "none"
        out_shape = ["batch"] + ([] if pooled else ["time"]) + [self.config.output_size]
        outputs = [helper.make_tensor_value_info("output", tp.FLOAT, out_shape)]
        for (name, shape), final in zip(parts, finals):
            g.op("Identity", final, out=[f"{name}_n"])
            outputs.append(helper.make_tensor_value_info(f"{name}_n", tp.FLOAT,
                                                         ["batch", *shape]))
        graph = helper.make_graph(g.nodes, "lstmkit", inputs, outputs, g.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="lstmkit")

    def _initial(self, parts) -> list[str]:
        """The initial state parts: the graph's inputs, or zeros (B, *shape)."""
        if self.with_state:
            return [f"{name}0" for name, _ in parts]
        g, zero = self.g, self.onnx.numpy_helper.from_array(np.zeros(1, np.float32))
        return [g.op("ConstantOfShape", g.op("Concat", self.batch, g.const(np.array(shape)),
                                             axis=0), value=zero) for _, shape in parts]

    # --- the blocks --------------------------------------------------------------------------

    def _mlstm_block(self, b: int, x: str, initial):
        g, layer, p = self.g, self.layer, f"rnn.blocks.{b}."
        NH, U = layer.mlstm_heads, layer.mlstm_inner
        x_m, z = self.g.split(self._linear(self._norm(x, p + "norm.weight"), p + "proj_up"), 2, U)
        conv, conv_state = self._conv(x_m, next(initial), p + "conv.conv")
        q, k = self._headwise(conv, p + "q_proj"), self._headwise(conv, p + "k_proj")
        v = self._headwise(x_m, p + "v_proj")
        qkv = g.op("Concat", q, k, v, axis=-1)
        i, f = self._linear(qkv, p + "igate"), self._linear(qkv, p + "fgate")  # (B, T, NH)
        heads = g.const(np.array([0, 0, NH, U // NH]))
        q, k, v = (g.op("Reshape", t, heads) for t in (q, k, v))  # (B, T, NH, D)
        cell = [next(initial) for _ in range(3)]

        def step(body, state, xs):
            return onnx_recurrence(body, *xs, state, eps=MLSTM_EPS, forget="sigmoid",
                                   head_size=U // NH)

        h, cell = self._scan(cell, (3, 2, 1), [q, k, v, i, f], (2, 2, 2, 1, 1), 2, step)
        h = self._head_norm(g.op("Reshape", h, g.const(np.array([0, 0, U]))),
                            p + "out_norm.weight", NH)
        h = g.op("Add", h, g.op("Mul", g.const(self.arrays[p + "skip"]), conv))
        out = self._linear(g.op("Mul", h, self._silu(z)), p + "proj_down")
        return g.op("Add", x, out), [conv_state, *cell]

    def _slstm_block(self, b: int, x: str, initial):
        g, layer, p = self.g, self.layer, f"rnn.blocks.{b}."
        E, NH = layer.embedding_dim, layer.slstm_heads
        h = self._norm(x, p + "norm.weight")
        conv, conv_state = self._conv(h, next(initial), p + "conv.conv")
        term = g.op("Concat", *(self._headwise(src, p + gate) for src, gate in (
            (conv, "igate"), (conv, "fgate"), (h, "zgate"), (h, "ogate"))), axis=-1)
        term = g.op("Add", term, g.const(self.arrays[p + "bias"]))  # (B, T, 4E)
        recurrent = g.const(slstm_cell.dense_recurrent(self.arrays[p + "weight_hh"]), "R")
        cfg = slstm_cell.sLSTMConfig(E, E, num_heads=NH)  # the block's: sigmoid, nxai

        def step(body, state, xs):
            pre = body.op("Add", xs[0], body.op("MatMul", state[0], recurrent))
            new = slstm_cell.onnx_pointwise(body, pre, state, cfg)
            return new[0], new

        cell = [next(initial) for _ in range(4)]
        y, cell = self._scan(cell, (1,) * 4, [term], (1,), 1, step)
        x = g.op("Add", x, self._head_norm(y, p + "out_norm.weight", NH))
        up = self._linear(self._norm(x, p + "ffn_norm.weight"), p + "ffn_up")
        gate, up = g.split(up, 2, layer.ffn_inner)
        out = self._linear(g.op("Mul", self._gelu(gate), up), p + "ffn_down")
        return g.op("Add", x, out), [conv_state, *cell]

    # --- pieces ------------------------------------------------------------------------------

    def _scan(self, s0, state_ranks, seqs, seq_ranks, out_rank: int, step):
        """A Scan over axis 1 of the batch-first ``seqs`` (B, T, ...) from states ``s0``
        (B, ...), the state kept and the output zero past each length. ``step(body, state
        names, step input names) -> (y_t, new state names)``. Returns (ys (B, T, ...), finals).
        """
        g, helper, tp = self.g, self.onnx.helper, self.onnx.TensorProto
        body = _Graph(self.onnx, prefix=g.name("body") + "/")
        state_in = [body.name(f"s{k}") for k in range(len(s0))]
        xs = [body.name(f"x{k}") for k in range(len(seqs))]
        m_t = body.name("m_t")  # (B, 1)
        y, new = step(body, state_in, xs)
        valid = body.op("Cast", m_t, to=tp.BOOL)
        state_out = [body.op("Where", _rows(body, valid, r), cur, prev)
                     for prev, cur, r in zip(state_in, new, state_ranks)]
        y_t = body.op("Mul", y, _rows(body, m_t, out_rank))

        def info(names, ranks):
            return [helper.make_tensor_value_info(n, tp.FLOAT, [None] * (1 + r))
                    for n, r in zip(names, ranks)]

        graph = helper.make_graph(body.nodes, body.prefix + "step",
                                  info([*state_in, *xs, m_t], [*state_ranks, *seq_ranks, 1]),
                                  info([*state_out, y_t], [*state_ranks, out_rank]),
                                  body.initializers)
        n = len(seqs) + 1
        *finals, ys = g.op("Scan", *s0, *seqs, self.valid, outputs=len(s0) + 1, body=graph,
                           num_scan_inputs=n, scan_input_axes=[1] * n, scan_output_axes=[1])
        return ys, finals

    def _linear(self, x: str, name: str) -> str:
        g = self.g
        y = g.op("MatMul", x, g.const(self.arrays[name + ".weight"].T))
        bias = self.arrays.get(name + ".bias")
        return y if bias is None else g.op("Add", y, g.const(bias))

    def _headwise(self, x: str, name: str) -> str:
        g = self.g
        y = g.op("MatMul", x, g.const(headwise_dense(self.arrays[name + ".weight"])))
        bias = self.arrays.get(name + ".bias")
        return y if bias is None else g.op("Add", y, g.const(bias))

    def _norm(self, x: str, weight: str) -> str:
        """LayerNorm over the last axis, weight only."""
        return self.g.op("LayerNormalization", x, self.g.const(self.arrays[weight]), axis=-1,
                         epsilon=LN_EPS)

    def _head_norm(self, x: str, weight: str, heads: int) -> str:
        """Layer normalisation within each head of x (B, T, NH * D), then the weight."""
        g = self.g
        width = self.arrays[weight].shape[0]
        grouped = g.op("Reshape", x, g.const(np.array([0, 0, heads, width // heads])))
        normed = g.op("LayerNormalization", grouped,
                      g.const(np.ones(width // heads, np.float32)), axis=-1, epsilon=LN_EPS)
        normed = g.op("Reshape", normed, g.const(np.array([0, 0, width])))
        return g.op("Mul", normed, g.const(self.arrays[weight]))

    def _conv(self, x: str, state: str, name: str):
        """The depthwise causal convolution, then SiLU: x (B, T, F), state (B, K - 1, F) ->
        (silu(conv) (B, T, F), the new state: the last K - 1 valid inputs)."""
        g = self.g
        weight = self.arrays[name + ".weight"]  # (F, 1, K)
        F_, K = weight.shape[0], weight.shape[2]
        xx = g.op("Concat", state, x, axis=1)  # (B, K - 1 + T, F)
        y = g.op("Conv", g.op("Transpose", xx, perm=[0, 2, 1]), g.const(weight),
                 g.const(self.arrays[name + ".bias"]), group=F_, kernel_shape=[K])
        y = g.op("Transpose", y, perm=[0, 2, 1])  # (B, T, F)
        index = g.op("Add", g.op("Unsqueeze", self.lens, g.const(np.array([1]))),
                     g.const(np.arange(K - 1)))  # (B, K - 1)
        new = g.op("GatherND", xx, g.op("Unsqueeze", index, g.const(np.array([2]))),
                   batch_dims=1)
        return self._silu(y), new

    def _silu(self, x: str) -> str:
        return self.g.op("Mul", x, self.g.op("Sigmoid", x))

    def _gelu(self, x: str) -> str:
        """torch's exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (ONNX's Gelu needs opset 20)."""
        g = self.g
        erf = g.op("Erf", g.op("Mul", x, g.const(np.float32(2 ** -0.5))))
        return g.op("Mul", g.op("Mul", x, g.const(np.float32(0.5))),
                    g.op("Add", erf, g.const(np.float32(1.0))))
