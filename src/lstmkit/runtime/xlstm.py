"""xLSTM in NumPy: the sLSTM and mLSTM steps, and the paper's block stack.

The same equations as :mod:`lstmkit.cells.slstm`, :mod:`lstmkit.cells.mlstm` and
:mod:`lstmkit.layers.xlstm_blocks` (read their docstrings), NX-AI's departures from the paper
included (the sLSTM's first-step stabiliser and clamp with ``stabilizer="nxai"``, the mLSTM's eps
in the stabilised normaliser and its query scale), written again so that this package runs
without torch. Every mLSTM form (parallel, chunkwise, recurrent) computes one function; this
runtime steps the recurrent one.

:data:`FAMILIES` holds the two cell families for :mod:`lstmkit.runtime.cells`;
:class:`xLSTMModel` is a :class:`~lstmkit.runtime.model.Model` whose stack is an xLSTM block
stack (what :func:`lstmkit.runtime.load` returns for a model exported with one).

Legend: B batch, T time, E the stack's width, U the mLSTM block's inner width, NH heads,
D = DK = DV units per head, K the convolution's kernel size.
"""

from __future__ import annotations

import math

import numpy as np

from lstmkit.runtime.cells import LN_EPS, RuntimeFamily, layer_norm, sigmoid
from lstmkit.runtime.model import Model, _rows

MLSTM_EPS = 1e-6
"""The eps of the block stack's mLSTM (the functional mLSTM's default, which the blocks use)."""


def log_forget(f, forget: str):
    """log f_t from f~_t: log sigmoid(f~) (as -softplus(-f~), exact for any f~) or f~ itself."""
    return -np.logaddexp(0.0, -f) if forget == "sigmoid" else f


def silu(x):
    return x * sigmoid(x)


_ERF = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    """torch's exact GELU, x Φ(x). NumPy has no erf: math.erf element by element (correctly
    rounded, where a rational approximation would leave 1e-7 behind)."""
    erf = _ERF(x.astype(np.float64) / math.sqrt(2.0)).astype(x.dtype)
    return 0.5 * x * (1.0 + erf)


# --- sLSTM --------------------------------------------------------------------------------------

def slstm_recurrent(h, weight_hh):
    """R h: h (B, H), weight_hh (NH, D, 4, D) -> (B, 4H) in the input term's block layout."""
    NH, D = weight_hh.shape[:2]
    r = np.einsum("bkd,kdge->bgke", h.reshape(h.shape[0], NH, D), weight_hh)  # (B, 4, NH, D)
    return r.reshape(h.shape[0], -1)


def slstm_pointwise(pre, state, forget: str, stabilizer: str):
    """The gates and state update from the pre-activations (B, 4H), blocks i, f, z, o."""
    i, f, z, o = np.split(pre, 4, axis=-1)
    _, c, n, m = state
    logfm = log_forget(f, forget) + m
    m_new = np.maximum(i, logfm)
    if stabilizer == "nxai":  # NX-AI's first step, and its clamp at 1
        m_new = np.where(n == 0, i, m_new)
        i_, f_ = np.minimum(np.exp(i - m_new), 1.0), np.minimum(np.exp(logfm - m_new), 1.0)
    else:
        i_, f_ = np.exp(i - m_new), np.exp(logfm - m_new)
    c = f_ * c + i_ * np.tanh(z)
    n = f_ * n + i_
    return sigmoid(o) * c / n, c, n, m_new


def slstm_step(gx, state, w: dict, cfg: dict):
    """One sLSTM step from W x_t (B, 4H) and (h, c, n, m). The bias is added here: the layer
    names it ``bias``, not the ``bias_ih`` the shared input term reads."""
    pre = gx + slstm_recurrent(state[0], w["weight_hh"]) + w.get("bias", 0.0)
    return slstm_pointwise(pre, state, cfg["forget"], cfg["stabilizer"])


# --- mLSTM --------------------------------------------------------------------------------------

def mlstm_recurrence(q, k, v, i, f, state, eps: float, forget: str):
    """One step over heads: q, k, v (B, NH, D), i, f (B, NH) -> (h~ (B, NH, D), (C, n, m))."""
    C, n, m = state
    logf = log_forget(f, forget)
    m_new = np.maximum(logf + m, i)  # (B, NH)
    f_ = np.exp(logf + m - m_new)[..., None]
    i_ = np.exp(i - m_new)[..., None]
    C = f_[..., None] * C + i_[..., None] * (k[..., :, None] * v[..., None, :])  # (B, NH, D, D)
    n = f_ * n + i_ * k
    qs = q * q.shape[-1] ** -0.5
    num = np.einsum("bhk,bhkv->bhv", qs, C)
    den = (qs * n).sum(-1, keepdims=True)  # (B, NH, 1)
    return num / (np.maximum(np.abs(den), np.exp(-m_new)[..., None]) + eps), (C, n, m_new)


def mlstm_step(gx, state, w: dict, cfg: dict):
    """One mLSTM cell step from its input term (B, G): (h_t = o_t * h~_t (B, H), state)."""
    H, NH = cfg["hidden_size"], cfg["num_heads"]
    q, k, v, i, f, o = np.split(gx, np.cumsum([H, H, H, NH, NH]), axis=-1)
    heads = [t.reshape(t.shape[0], NH, -1) for t in (q, k, v)]
    h, state = mlstm_recurrence(*heads, i, f, state, cfg["eps"], cfg["forget"])
    return sigmoid(o) * h.reshape(h.shape[0], H), state


def _slstm_state(cfg: dict):
    return ((cfg["hidden_size"],),) * 4


def _mlstm_state(cfg: dict):
    NH = cfg["num_heads"]
    D = cfg["hidden_size"] // NH
    return (NH, D, D), (NH, D), (NH,)


FAMILIES = {
    "slstm": RuntimeFamily(slstm_step, _slstm_state),
    "mlstm": RuntimeFamily(mlstm_step, _mlstm_state, output=lambda cfg: cfg["hidden_size"]),
}
"""The xLSTM cell families, registered in :data:`lstmkit.runtime.cells.FAMILIES`."""


# --- the block stack ----------------------------------------------------------------------------

def _scan(step, inputs, state, valid):
    """``step(inputs at t, state) -> (y_t, state)`` over time, the state kept past each length.
    Shape: inputs each (B, T, ...), valid (B, T) or None -> y (B, T, ...), state."""
    ys = []
    for t in range(inputs[0].shape[1]):
        y, new = step(*(a[:, t] for a in inputs), state)
        if valid is not None:
            new = tuple(np.where(_rows(valid[:, t], cur), cur, prev)
                        for prev, cur in zip(state, new))
        ys.append(y)
        state = new
    return np.stack(ys, 1), tuple(state)


def _headwise(x, w: dict, name: str):
    """A block-diagonal linear map: (..., NH * D) with weight (NH, D_out, D_in)."""
    weight = w[name + ".weight"]
    y = np.einsum("...hd,hod->...ho", x.reshape(x.shape[:-1] + (weight.shape[0], -1)), weight)
    y = y.reshape(x.shape[:-1] + (-1,))
    return y + w[name + ".bias"] if name + ".bias" in w else y


def _linear(x, w: dict, name: str):
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def _head_norm(x, weight, heads: int):
    """Layer normalisation within each head (torch's group norm over (..., NH * D))."""
    g = x.reshape(x.shape[:-1] + (heads, -1))
    mean = g.mean(-1, keepdims=True)
    var = ((g - mean) ** 2).mean(-1, keepdims=True)
    return ((g - mean) / np.sqrt(var + LN_EPS)).reshape(x.shape) * weight


def _causal_conv(x, state, w: dict, name: str, lengths):
    """Depthwise causal convolution: x (B, T, F), state (B, K - 1, F) -> (y, new state)."""
    weight, bias = w[name + ".weight"][:, 0], w[name + ".bias"]  # (F, K), (F,)
    K, T = weight.shape[1], x.shape[1]
    xx = np.concatenate([state, x], 1)  # (B, K - 1 + T, F)
    y = sum(xx[:, j:j + T] * weight[:, j] for j in range(K)) + bias
    if lengths is None:
        return y, xx[:, T:]
    index = lengths[:, None] + np.arange(K - 1)  # (B, K - 1): the last K - 1 valid inputs
    return y, np.take_along_axis(xx, index[..., None], axis=1)


def _mlstm_block(x, state, w: dict, layer: dict, valid, lengths):
    NH, U = layer["mlstm_heads"], _inner(layer, "mlstm_proj_factor")
    x_m, z = np.split(_linear(layer_norm(x, w["norm.weight"]), w, "proj_up"), 2, axis=-1)
    conv, conv_state = _causal_conv(x_m, state[0], w, "conv.conv", lengths)
    conv = silu(conv)
    q, k = _headwise(conv, w, "q_proj"), _headwise(conv, w, "k_proj")
    v = _headwise(x_m, w, "v_proj")
    qkv = np.concatenate([q, k, v], -1)
    i, f = _linear(qkv, w, "igate"), _linear(qkv, w, "fgate")  # (B, T, NH)
    heads = [t.reshape(t.shape[:2] + (NH, -1)) for t in (q, k, v)]  # (B, T, NH, D)

    def step(q, k, v, i, f, s):
        return mlstm_recurrence(q, k, v, i, f, s, MLSTM_EPS, "sigmoid")

    h, cell = _scan(step, (*heads, i, f), state[1], valid)
    h = _head_norm(h.reshape(h.shape[:2] + (U,)), w["out_norm.weight"], NH) + w["skip"] * conv
    return x + _linear(h * silu(z), w, "proj_down"), (conv_state, cell)


def _slstm_block(x, state, w: dict, layer: dict, valid, lengths):
    NH = layer["slstm_heads"]
    h = layer_norm(x, w["norm.weight"])
    conv, conv_state = _causal_conv(h, state[0], w, "conv.conv", lengths)
    conv = silu(conv)
    term = np.concatenate([_headwise(conv, w, "igate"), _headwise(conv, w, "fgate"),
                           _headwise(h, w, "zgate"), _headwise(h, w, "ogate")], -1) + w["bias"]

    def step(term, s):
        new = slstm_pointwise(term + slstm_recurrent(s[0], w["weight_hh"]), s, "sigmoid", "nxai")
        return new[0], new

    y, cell = _scan(step, (term,), state[1], valid)
    x = x + _head_norm(y, w["out_norm.weight"], NH)
    gate, up = np.split(_linear(layer_norm(x, w["ffn_norm.weight"]), w, "ffn_up"), 2, axis=-1)
    return x + _linear(gelu(gate) * up, w, "ffn_down"), (conv_state, cell)


def _inner(layer: dict, factor: str) -> int:
    """NX-AI's inner widths (:func:`lstmkit.layers.xlstm_blocks.round_up`)."""
    multiple = layer["round_to"]
    return int(math.ceil(layer[factor] * layer["embedding_dim"] / multiple) * multiple)


class xLSTMModel(Model):
    """A SequenceModel with an xLSTM block stack, NumPy only (see :class:`Model` for the rest).

    The state is a tuple with one ``(conv, cell)`` pair per block, as
    :meth:`lstmkit.layers.xlstm_blocks.xLSTM.init_state` makes it: conv (B, K - 1, F) the
    convolution's last inputs, cell the sLSTM's (h, c, n, m) each (B, E) or the mLSTM's
    (C (B, NH, D, D), n (B, NH, D), m (B, NH)).
    """

    def __init__(self, config: dict, arrays: dict[str, np.ndarray], meta: dict | None = None):
        self.config, self.meta = config, meta or {}
        self.layer = layer = config["layer"]
        if layer.get("bidirectional"):  # the runtime steps the forward stack only
            raise ValueError("model: the NumPy runtime runs unidirectional xLSTM stacks, got "
                             "bidirectional=True")
        # The base class's input check reads ``cell``; a stack has no cell family, so the
        # single-stream stepper steps through :meth:`step`.
        self.cell = {"family": None, "input_size": layer["input_size"]}
        self.directions, self.zoneout, self.packed = 1, 0.0, {}
        self.dtype = arrays["head.weight"].dtype
        self.embedding = arrays.get("embedding.weight")
        self.head_weight, self.head_bias = arrays["head.weight"], arrays["head.bias"]
        self.stack = {name[4:]: a for name, a in arrays.items() if name.startswith("rnn.")}
        self.blocks = [{name[len(f"blocks.{b}."):]: a for name, a in self.stack.items()
                        if name.startswith(f"blocks.{b}.")} for b in range(layer["num_blocks"])]

    def init_state(self, batch: int = 1):
        """Zeros: one (conv, cell) pair per block, each array (B, ...)."""
        layer, zeros = self.layer, (lambda *shape: np.zeros((batch,) + shape, self.dtype))
        E, K = layer["embedding_dim"], layer["conv_kernel"]
        state = []
        for b in range(layer["num_blocks"]):
            if b in layer["slstm_at"]:
                state.append((zeros(K - 1, E), tuple(zeros(E) for _ in range(4))))
            else:
                U, NH = _inner(layer, "mlstm_proj_factor"), layer["mlstm_heads"]
                cell = (zeros(NH, U // NH, U // NH), zeros(NH, U // NH), zeros(NH))
                state.append((zeros(K - 1, U), cell))
        return tuple(state)

    def _stack(self, x, initial, lengths):
        """The block stack over x (T, B, I) from one state per block -> (y (T, B, E), state)."""
        x = x.transpose(1, 0, 2)  # (B, T, I)
        valid = None if lengths is None else np.arange(x.shape[1])[None, :] < lengths[:, None]
        if valid is not None:
            x = np.where(valid[..., None], x, 0.0)
        if "proj_in.weight" in self.stack:
            x = _linear(x, self.stack, "proj_in")
        finals = []
        for b, (w, s) in enumerate(zip(self.blocks, initial)):
            block = _slstm_block if b in self.layer["slstm_at"] else _mlstm_block
            x, s = block(x, s, w, self.layer, valid, lengths)
            finals.append(s)
        y = layer_norm(x, self.stack["post_norm.weight"])
        if valid is not None:
            y = np.where(valid[..., None], y, 0.0)
        return y.transpose(1, 0, 2), tuple(finals)
