"""sLSTM: the xLSTM's scalar-memory cell with exponential gating, a normaliser and a stabiliser
(Beck et al., "xLSTM: Extended Long Short-Term Memory", NeurIPS 2024, section 2.2).

With the state (h, c, n, m), each of H = NH * DH units, and the input term x~ = W x_t + b::

    (i~, f~, z~, o~) = x~_t + R h_{t-1}          R block-diagonal: one (DH, 4 DH) block per head
    log f_t = log sigmoid(f~_t)                  (or f~_t with forget="exp")
    m_t     = max(log f_t + m_{t-1}, i~_t)       stabiliser
    i'_t    = exp(i~_t - m_t)                    stabilised input gate
    f'_t    = exp(log f_t + m_{t-1} - m_t)       stabilised forget gate
    c_t     = f'_t c_{t-1} + i'_t tanh(z~_t)
    n_t     = f'_t n_{t-1} + i'_t
    h_t     = sigmoid(o~_t) c_t / n_t

where i = exp(i~) is the exponential input gate, c_t and n_t are the paper's c*_t and n*_t times
exp(-m_t), and heads mix only through the layer's output: R has no entries between heads. The
ratio c_t / n_t, and so h_t, does not depend on m.

NX-AI's vanilla sLSTM (xlstm 2.0.6, ``slstm_forward_pointwise``) departs from this in two places,
and ``stabilizer="nxai"`` (the default) follows it:

* **First step.** While the normaliser is zero (a fresh state) it sets m_t = i~_t instead of
  max(log f_t + m_{t-1}, i~_t). NX-AI tests the whole batch at once (``torch.all(n == 0)``);
  lstmkit tests each unit, so streams in a batch stay independent. The two agree whenever the
  batch is all fresh or not at all (always, in NX-AI's own use).
* **Clamp.** It clamps i'_t and f'_t at 1. This only acts on that first step (f' > 1 when
  log f_1 + m_0 > i~_1), where it multiplies c_0 = n_0 = 0.

Both change m (and with it the scale of c and n), never h. ``stabilizer="paper"`` uses the
max at every step and no clamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from lstmkit.cells._heads import HeadedConfig, log_forget, onnx_log_forget
from lstmkit.cells.base import Family, OnnxMapping

GATES = ("i", "f", "z", "o")
"""Blocks of the G*H = 4H input term and recurrent product, in order."""

STABILIZERS = ("nxai", "paper")


class sLSTMState(NamedTuple):
    """The sLSTM state, each (..., H)."""

    h: torch.Tensor
    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


@dataclass(frozen=True)
class sLSTMConfig(HeadedConfig):
    """What one sLSTM step computes; the recurrent matrix has one (DH, 4 DH) block per head."""

    family: ClassVar[str] = "slstm"
    """The family's key (for the family registry of lstmkit.cells)."""
    init_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that only change the initialisation: none."""

    stabilizer: str = "nxai"
    """"nxai": NX-AI's first step and clamp (see the module docstring); "paper": the max always."""

    def __post_init__(self):
        super().__post_init__()
        if self.stabilizer not in STABILIZERS:
            raise ValueError(f"stabilizer: expected one of {STABILIZERS}, "
                             f"got {self.stabilizer!r}")


OPTION_SETS = ({}, {"forget": "exp"}, {"stabilizer": "paper"}, {"bias": False})
"""Options that together use every field of the config at least once (for the conformance
table)."""


def state_spec(cfg: sLSTMConfig) -> dict[str, tuple[int, ...]]:
    """State tensor name -> trailing shape; h first (the cell's output)."""
    return {name: (cfg.hidden_size,) for name in sLSTMState._fields}


def parameter_spec(cfg: sLSTMConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape. ``weight_hh`` is NX-AI's external layout (NH, DH_in, 4, DH_out)."""
    H, NH, D = cfg.hidden_size, cfg.num_heads, cfg.head_size
    spec = {"weight_ih": (4 * H, cfg.input_size), "weight_hh": (NH, D, 4, D)}
    if cfg.bias:
        spec["bias"] = (4 * H,)
    return spec


def forget_bias_init(head_size: int, block: int = 0, num_blocks: int = 1) -> torch.Tensor:
    """NX-AI's "powerlaw_blockdependent" forget-gate bias for one head: from 5 down to -7 along
    the head's units, with an exponent that grows with the block's depth."""
    ratio = block / (num_blocks - 1) if num_blocks > 1 else 0.0
    x = torch.arange(head_size) / max(head_size - 1, 1)
    return -(-5.0 + 12.0 * x ** (0.3 + 1.3 * ratio))


def init_parameters(cfg: sLSTMConfig, params: dict[str, torch.Tensor]) -> None:
    """torch.nn.Linear's uniform draw for ``weight_ih``; NX-AI's zeros for ``weight_hh`` and its
    power-law forget bias (other biases 0)."""
    bound = 1.0 / math.sqrt(cfg.input_size)
    with torch.no_grad():
        params["weight_ih"].uniform_(-bound, bound)
        params["weight_hh"].zero_()
        if "bias" in params:
            bias = params["bias"].view(4, cfg.num_heads, cfg.head_size)
            bias.zero_()
            bias[GATES.index("f")] = forget_bias_init(cfg.head_size)


def zero_state(cfg: sLSTMConfig, leading: tuple[int, ...], like: torch.Tensor) -> sLSTMState:
    return sLSTMState(*(like.new_zeros(leading + (cfg.hidden_size,)) for _ in sLSTMState._fields))


def input_term(x: torch.Tensor, weights: dict[str, torch.Tensor], cfg: sLSTMConfig):
    """x (..., I) -> x~ (..., 4H) for all steps at once."""
    return F.linear(x, weights["weight_ih"], weights.get("bias"))


def recurrent_term(h: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """R h: h (B, H), weight_hh (NH, DH, 4, DH) -> (B, 4H) in the input term's layout."""
    NH, D = weight_hh.shape[:2]
    r = torch.einsum("bkd,kdge->bgke", h.unflatten(-1, (NH, D)), weight_hh)  # (B, 4, NH, DH)
    return r.flatten(1)


def pointwise(i, f, z, o, state: sLSTMState, *, forget: str = "sigmoid",
              stabilizer: str = "nxai") -> sLSTMState:
    """The gate and state update from the pre-activations i~, f~, z~, o~ (same shape as the
    state tensors)."""
    _, c, n, m = state
    logfm = log_forget(f, forget) + m
    m_new = torch.maximum(i, logfm)
    if stabilizer == "nxai":
        m_new = torch.where(n == 0, i, m_new)
        one = torch.ones_like(i)
        i_ = torch.minimum(torch.exp(i - m_new), one)
        f_ = torch.minimum(torch.exp(logfm - m_new), one)
    else:
        i_, f_ = torch.exp(i - m_new), torch.exp(logfm - m_new)
    c = f_ * c + i_ * torch.tanh(z)
    n = f_ * n + i_
    return sLSTMState(torch.sigmoid(o) * c / n, c, n, m_new)


def step(x_term: torch.Tensor, state: sLSTMState, weights: dict[str, torch.Tensor],
         cfg: sLSTMConfig) -> sLSTMState:
    """One step from the input term x~_t (B, 4H): the reference every scan is tested against."""
    pre = x_term + recurrent_term(state.h, weights["weight_hh"])
    return pointwise(*pre.chunk(4, -1), state, forget=cfg.forget, stabilizer=cfg.stabilizer)


def dense_recurrent(weight_hh: np.ndarray) -> np.ndarray:
    """The block-diagonal R (NH, DH, 4, DH) as one matrix (H, 4H) with ``h @ R`` equal to
    :func:`recurrent_term`: row k DH + d, column g H + k DH + e holds R[k, d, g, e]."""
    NH, D = weight_hh.shape[:2]
    dense = np.zeros((NH, D, 4, NH, D), weight_hh.dtype)
    for k in range(NH):
        dense[k, :, :, k] = weight_hh[k]
    return dense.reshape(NH * D, 4 * NH * D)


def onnx_pointwise(body, pre: str, state: list[str], cfg) -> list[str]:
    """:func:`pointwise` in an ONNX graph: pre (B, 4H) -> the names of (h, c, n, m)."""
    _, c, n, m = state
    i, f, z, o = body.split(pre, 4, cfg.hidden_size)
    logfm = body.op("Add", onnx_log_forget(body, f, cfg.forget), m)
    m_new = body.op("Max", i, logfm)
    if cfg.stabilizer == "nxai":
        m_new = body.op("Where", body.op("Equal", n, body.const(np.float32(0.0))), i, m_new)
    i_, f_ = (body.op("Exp", body.op("Sub", a, m_new)) for a in (i, logfm))
    if cfg.stabilizer == "nxai":
        one = body.const(np.float32(1.0))
        i_, f_ = body.op("Min", i_, one), body.op("Min", f_, one)
    c = body.op("Add", body.op("Mul", f_, c), body.op("Mul", i_, body.op("Tanh", z)))
    n = body.op("Add", body.op("Mul", f_, n), i_)
    h = body.op("Div", body.op("Mul", body.op("Sigmoid", o), c), n)
    return [h, c, n, m_new]


def onnx_step(body, cfg: sLSTMConfig, w: dict, state: list[str], x: str) -> list[str]:
    """One step in an ONNX Scan body (see :class:`~lstmkit.cells.base.OnnxMapping`)."""
    pre = body.op("Add", body.gate_term(x, w["weight_ih"], w.get("bias")),
                  body.op("MatMul", state[0], w["weight_hh"]))
    return onnx_pointwise(body, pre, state, cfg)


def onnx_arrays(cfg: sLSTMConfig, w: dict) -> dict:
    """What :func:`onnx_step` reads: W^T (I, 4H), R as one matrix (H, 4H), the bias."""
    arrays = {"weight_ih": w["weight_ih"].T, "weight_hh": dense_recurrent(w["weight_hh"])}
    return {**arrays, **({"bias": w["bias"]} if "bias" in w else {})}


FAMILY = Family(
    key="slstm", config=sLSTMConfig, gates=GATES, state=state_spec, make_state=sLSTMState,
    parameters=parameter_spec, init=init_parameters, input=input_term, step=step,
    torch=None, option_sets=OPTION_SETS,
    onnx=OnnxMapping(operator=None, gates=GATES, options={}, attributes=lambda cfg, d: {},
                     step=onnx_step, arrays=onnx_arrays))
"""The sLSTM in the family registry: the layer, the reference backend, the streaming engine and
the conformance table run its :func:`step`; ONNX export is a Scan over :func:`onnx_step` (no
ONNX operator computes it); the NumPy runtime's step is in :mod:`lstmkit.runtime.xlstm`."""
