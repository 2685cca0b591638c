"""The three cell families' steps in NumPy: the same equations as :mod:`lstmkit.cells` (read
their docstrings), written again so that this package runs without torch.

Weights are a dict of arrays named as lstmkit's (``weight_ih``, ``bias_hh``, ``weight_peephole``,
...); ``cfg`` is the cell config as the JSON dict :meth:`lstmkit.config.CellConfig.to_dict`
saves. :data:`FAMILIES` holds the families this runtime knows, by key (the xLSTM families'
steps are in :mod:`lstmkit.runtime.xlstm`): a model of any other family is refused
(:func:`family`).

Legend: B batch, I input, H hidden, P output (proj_size or H), G gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

LN_EPS = 1e-5


def sigmoid(x):
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softplus(x):
    # torch's softplus is linear above 20.
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


ACTIVATIONS = {
    "sigmoid": sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": softplus,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "identity": lambda x: x,
}
"""Activation name -> NumPy function; the same set and parameters as lstmkit.activations."""


def layer_norm(v, weight, bias=None):
    """LN over the last axis with gain ``weight`` and optional ``bias`` (eps 1e-5)."""
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    out = (v - mean) / np.sqrt(var + LN_EPS) * weight
    return out if bias is None else out + bias


def gate_term(v, weight, bias, ln_weight):
    """``v W^T + b``, or ``LN(v W^T; γ) + b`` with layer norm. Shape: (..., K) -> (..., G*H)."""
    term = v @ weight.T
    if ln_weight is not None:
        term = layer_norm(term, ln_weight)
    return term if bias is None else term + bias


def cell_input(x, w: dict, cfg: dict):
    """The input term of every step at once. Shape: x (..., I) -> (..., G*H)."""
    return gate_term(x, w["weight_ih"], w.get("bias_ih"), w.get("weight_ln_ih"))


def lstm_step(gx, state, w: dict, cfg: dict):
    """One LSTM step from the input term gx (B, 4H) and (h (B, P), c (B, H))."""
    h, c = state
    a_i, a_f, a_g, a_o = np.split(gx + gate_term(h, w["weight_hh"], w.get("bias_hh"),
                                                 w.get("weight_ln_hh")), 4, axis=-1)
    if cfg["peephole"]:
        p_i, p_f, p_o = np.split(w["weight_peephole"], 3)  # torch order i, f, o
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
    sigma = ACTIVATIONS[cfg["gate_activation"]]
    clip = cfg["cell_clip"]
    cl = (lambda a: a) if clip is None else (lambda a: np.clip(a, -clip, clip))
    i = sigma(cl(a_i)) if cfg["input_gate"] else 1.0
    if cfg["coupled"]:
        f = 1.0 - i
    else:
        f = sigma(cl(a_f)) if cfg["forget_gate"] else 1.0
    c = f * c + i * ACTIVATIONS[cfg["cell_activation"]](cl(a_g))
    if cfg["peephole"]:
        a_o = a_o + p_o * c
    o = sigma(cl(a_o)) if cfg["output_gate"] else 1.0
    c_out = layer_norm(c, w["weight_ln_c"], w["bias_ln_c"]) if cfg["layer_norm"] else c
    h = o * ACTIVATIONS[cfg["output_activation"]](c_out)
    if "weight_hr" in w:
        h = h @ w["weight_hr"].T
    return h, c


def gru_step(gx, state, w: dict, cfg: dict):
    """One GRU step from gx (B, 3H) and (h (B, H),); gate order r, z, n."""
    (h,) = state
    x_r, x_z, x_n = np.split(gx, 3, axis=-1)
    w_r, w_z, w_n = np.split(w["weight_hh"], 3)
    b_r, b_z, b_n = np.split(w["bias_hh"], 3) if "bias_hh" in w else (0.0, 0.0, 0.0)
    r = sigmoid(x_r + h @ w_r.T + b_r)
    z = sigmoid(x_z + h @ w_z.T + b_z)
    if cfg["reset_after"]:
        n = np.tanh(x_n + r * (h @ w_n.T + b_n))
    else:
        n = np.tanh(x_n + (r * h) @ w_n.T + b_n)
    return ((1.0 - z) * n + z * h,)


def rnn_step(gx, state, w: dict, cfg: dict):
    """One Elman step from gx (B, H) and (h (B, H),)."""
    (h,) = state
    a = gx + h @ w["weight_hh"].T + w.get("bias_hh", 0.0)
    return (np.maximum(a, 0.0) if cfg["nonlinearity"] == "relu" else np.tanh(a),)


class RuntimeFamily(NamedTuple):
    step: Callable
    """(gx (B, G*H), state tuple, weights, cfg) -> the new state tuple."""
    state: Callable[[dict], tuple[tuple[int, ...], ...]]
    """cfg -> the trailing shape of each state array; the first is h."""
    refuses: Callable[[dict], str | None] = lambda cfg: None
    """cfg -> why this runtime cannot compute it (an activation it has no function for)."""
    output: Callable[[dict], int] | None = None
    """cfg -> the width of h_t for a family whose step returns ``(h_t, state)`` (its output is
    no part of its state: xLSTM's mLSTM); None: the step returns the state, h first."""


def _lstm_state(cfg: dict) -> tuple[tuple[int, ...], ...]:
    return ((cfg["proj_size"] or cfg["hidden_size"],), (cfg["hidden_size"],))


def _lstm_refuses(cfg: dict) -> str | None:
    for name in ("gate_activation", "cell_activation", "output_activation"):
        if cfg[name] not in ACTIVATIONS:
            return f"{name}={cfg[name]!r} has no NumPy function (known: {', '.join(ACTIVATIONS)})"
    return None


FAMILIES = {
    "lstm": RuntimeFamily(lstm_step, _lstm_state, _lstm_refuses),
    "gru": RuntimeFamily(gru_step, lambda cfg: ((cfg["hidden_size"],),)),
    "rnn": RuntimeFamily(rnn_step, lambda cfg: ((cfg["hidden_size"],),)),
}
"""Family key -> its NumPy step and state shapes."""


def family(cfg: dict) -> RuntimeFamily:
    """The runtime family of a cell config dict; a family it has no step for raises ValueError."""
    key = cfg.get("family")
    if key not in FAMILIES:
        raise ValueError(f"runtime: expected a cell family with a NumPy step "
                         f"({', '.join(FAMILIES)}), got {key!r}")
    reason = FAMILIES[key].refuses(cfg)
    if reason is not None:
        raise ValueError(f"runtime: {reason}")
    return FAMILIES[key]


def state_shapes(cfg: dict) -> tuple[tuple[int, ...], ...]:
    """The trailing shape of each state array of a cell config dict."""
    return family(cfg).state(cfg)


def output_width(cfg: dict) -> int:
    """The width of a cell's output h_t (what the next layer and the head read)."""
    runtime = family(cfg)
    return runtime.state(cfg)[0][0] if runtime.output is None else runtime.output(cfg)


def _register_xlstm() -> None:
    # At the end, in a function: lstmkit.runtime.xlstm builds on this module's helpers.
    from lstmkit.runtime.xlstm import FAMILIES as XLSTM

    FAMILIES.update(XLSTM)


_register_xlstm()
