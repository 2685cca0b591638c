"""One stream, one step at a time, with every buffer allocated once: the per-step fast path.

At batch 1 a step's arithmetic is tiny (I=64, H=128: 0.2 MFLOP), so its cost is the number of
calls made, not their work. For a plain LSTM (sigmoid/tanh, no variant) each layer takes a copy of
its input, one matrix product and seven in-place NumPy calls:

    z   = [x, h, 1] W                        one product; W holds both weights and the bias
    z   = tanh(z)                            the gate rows i, f, o of W are pre-scaled by 1/2,
    σ   = (1 + z) / 2   for i, f, o          since σ(a) = (1 + tanh(a / 2)) / 2
    c   = i ⊙ g + f ⊙ c                      one product over [i | f] ⊙ [g | c], one sum
    h   = o ⊙ tanh(c)

so the gates are packed i, f, o, g (not torch's i, f, g, o) and followed by c in one buffer
[i | f | o | g | c], which makes [i | f] and [g | c] adjacent. The output head is one more product
with its bias folded in the same way. Other configurations step through :meth:`Model.step`.

With ``precision="float32"``, ``"float16"`` or ``"int8"`` each plain layer is instead one call
into the cpu backend's compiled step (:mod:`lstmkit.kernels.cpu.step`: torch and a C++ compiler
needed, imported only then), with its weights in that precision and its state in float32: at
large H a step reads its weights once, so float16's half the bytes is nearly half the time.
int8 rounds W_ih and W_hh per output row as :func:`lstmkit.runtime.quant.quantize_weight` does
(an int8 file's matrices come back as they were stored) and steps the dequantised weights.

Legend: K input width of a layer, H hidden, O outputs.
"""

from __future__ import annotations

import numpy as np

from lstmkit.runtime.cells import state_shapes
from lstmkit.runtime.quant import quantize_weight

_PLAIN = {"peephole": False, "coupled": False, "input_gate": True, "forget_gate": True,
          "output_gate": True, "cell_clip": None, "gate_activation": "sigmoid",
          "cell_activation": "tanh", "output_activation": "tanh", "layer_norm": False,
          "proj_size": 0}


def is_plain_lstm(model) -> bool:
    """Whether the fused NumPy path computes ``model``'s step."""
    cell = model.cell
    return (cell["family"] == "lstm" and all(cell[k] == v for k, v in _PLAIN.items())
            and model.directions == 1 and not model.zoneout)


_PRECISIONS = ("float32", "float16", "int8")


class Stepper:
    """A single stream of ``model`` (a :class:`~lstmkit.runtime.Model`) with its state inside:
    ``stepper(x_t) -> y_t``; ``stepper.state`` reads or sets the state, ``reset()`` zeroes it.

    Args:
        model: the runtime model.
        precision: None for the NumPy path in the model's dtype; "float32", "float16" or
            "int8" for the compiled step with weights in that precision (a plain LSTM only; the
            state and the outputs are then float32).
    """

    def __init__(self, model, precision: str | None = None):
        self.model = model
        self.fast = is_plain_lstm(model) and model.config["pooling"] in ("none", "last")
        if precision is not None and precision not in _PRECISIONS:
            raise ValueError(f"precision: expected None or one of {_PRECISIONS}, "
                             f"got {precision!r}")
        self.precision = precision if self.fast else None
        if precision is not None and not self.fast:
            raise ValueError("precision: expected None for a model that is not a plain "
                             "unidirectional LSTM (only those have a compiled step), got "
                             f"{precision!r}")
        if self.fast:
            dtype = model.dtype if precision is None else np.float32
            self._layers = [self._layer(k, precision) for k in range(model.num_layers)]
            width = model.cell["hidden_size"]
            self._head = np.concatenate([model.head_weight.T, model.head_bias[None]])  # (H+1, O)
            self._head = self._head.astype(dtype, copy=False)
            self._y = np.empty((1, model.head_weight.shape[0]), dtype)
            self._top = self._layers[-1].xh[:, -width - 1:]  # [h | 1] of the last layer
        self.reset()

    def _layer(self, k: int, precision: str | None):
        model, cfg = self.model, self.model.layer_cell(k)
        if precision is not None:
            return _KernelLayer(model.weights[k][0], cfg, precision)
        packed = model.packed  # shared by all of a model's steppers
        if k not in packed:
            packed[k] = _pack(model.weights[k][0], cfg, model.dtype)
        return _FastLayer(packed[k], cfg, model.dtype)

    def reset(self) -> None:
        """Back to the zero state."""
        self.state = self.model.init_state(1)

    @property
    def state(self):
        """The state as :meth:`Model.step` takes it: copies, (L, 1, size) per array."""
        if not self.fast:
            return self._state
        h = np.stack([layer.h.copy() for layer in self._layers])
        c = np.stack([layer.c.copy() for layer in self._layers])
        return h, c

    @state.setter
    def state(self, value) -> None:
        if not self.fast:
            self._state = value
            return
        h, c = value
        for k, layer in enumerate(self._layers):
            layer.h[...] = h[k]
            layer.c[...] = c[k]

    def __call__(self, x_t) -> np.ndarray:
        """One step: x_t (I,) floats or one token id -> the output (O,)."""
        model = self.model
        if not self.fast:
            y, self._state = model.step(np.asarray(x_t)[None], self._state)
            return y[0]
        x = model.embedding[x_t] if model.embedding is not None else x_t
        for layer in self._layers:
            x = layer.step(x)
        np.dot(self._top, self._head, out=self._y)
        return self._y[0].copy()


class _FastLayer:
    """One plain LSTM layer's buffers and packed weights."""

    def __init__(self, weight: np.ndarray, cfg: dict, dtype):
        hidden, width = cfg["hidden_size"], cfg["input_size"]
        self.weight = weight  # (K + H + 1, 4H), from _pack
        self.xh = np.zeros((1, width + hidden + 1), dtype)  # [x | h | 1]
        self.xh[0, -1] = 1.0
        self.buf = np.zeros((1, 5 * hidden), dtype)  # [i | f | o | g | c]
        self.prod = np.empty((1, 2 * hidden), dtype)
        self.tanh_c = np.empty((1, hidden), dtype)
        n = hidden
        self.x, self.h = self.xh[:, :width], self.xh[:, width:width + n]
        self.z, self.ifo = self.buf[:, :4 * n], self.buf[:, :3 * n]
        self.if_, self.gc = self.buf[:, :2 * n], self.buf[:, 3 * n:]
        self.o, self.c = self.buf[:, 2 * n:3 * n], self.buf[:, 4 * n:]
        self.ig, self.fc = self.prod[:, :n], self.prod[:, n:]

    def step(self, x):
        self.x[...] = x
        np.dot(self.xh, self.weight, out=self.z)
        np.tanh(self.z, out=self.z)
        np.add(self.ifo, 1.0, out=self.ifo)
        np.multiply(self.ifo, 0.5, out=self.ifo)
        np.multiply(self.if_, self.gc, out=self.prod)
        np.add(self.ig, self.fc, out=self.c)
        np.tanh(self.c, out=self.tanh_c)
        np.multiply(self.o, self.tanh_c, out=self.h)
        return self.h


class _KernelLayer:
    """One plain LSTM layer stepped by the compiled kernel, in place on NumPy buffers that
    torch tensors share (no copy crosses the call)."""

    def __init__(self, w: dict, cfg: dict, precision: str):
        import torch

        from lstmkit.kernels.cpu import _build, step

        hidden, width = cfg["hidden_size"], cfg["input_size"]
        tensor = {k: torch.from_numpy(np.asarray(v)) for k, v in w.items()}
        biases = tensor.get("bias_ih"), tensor.get("bias_hh")
        if precision == "int8":
            q = [torch.from_numpy(a) for name in ("weight_ih", "weight_hh")
                 for a in quantize_weight(w[name])]
            weights = step.pack_int8(*q, *biases)
        else:
            weights = step.pack(tensor["weight_ih"], tensor["weight_hh"], *biases, precision)
        self.xh = np.zeros((1, width + hidden + 1), np.float32)  # [x | h | 1], as _FastLayer's
        self.xh[0, -1] = 1.0
        self.c = np.zeros((1, hidden), np.float32)
        self.x, self.h = self.xh[:, :width], self.xh[:, width:width + hidden]
        x, h, c = (torch.from_numpy(a) for a in (self.x, self.h, self.c))
        # One layer of the stack op, stepping this layer's buffers in place.
        self._args = ([weights.packed], [weights.bias], [weights.scale], x, h[None], c[None],
                      h[None], c[None], False)
        self._op = _build.ops().lstm_step_.default  # not the packet: it resolves per call

    def step(self, x):
        self.x[...] = x
        self._op(*self._args)
        return self.h


def _pack(w: dict, cfg: dict, dtype) -> np.ndarray:
    """[W_ih | W_hh | b_ih + b_hh] with the gate rows reordered i, f, o, g and those of i, f, o
    halved, transposed for ``[x | h | 1] @ W``. Shape: (K + H + 1, 4H)."""
    hidden, width = cfg["hidden_size"], cfg["input_size"]
    assert state_shapes(cfg) == ((hidden,), (hidden,))
    bias = w.get("bias_ih", 0.0) + w.get("bias_hh", 0.0)
    packed = np.zeros((4 * hidden, width + hidden + 1), dtype)  # rows i, f, o, g
    for row, gate in enumerate((0, 1, 3, 2)):  # torch's i, f, g, o -> i, f, o, g
        rows = slice(gate * hidden, (gate + 1) * hidden)
        scale = 1.0 if gate == 2 else 0.5  # exact: a power of two
        block = packed[row * hidden:(row + 1) * hidden]
        block[:, :width] = scale * w["weight_ih"][rows]
        block[:, width:-1] = scale * w["weight_hh"][rows]
        block[:, -1] = scale * (bias[rows] if np.ndim(bias) else 0.0)
    return np.ascontiguousarray(packed.T)
