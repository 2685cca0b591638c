"""mLSTM: the xLSTM's matrix-memory cell (Beck et al., "xLSTM: Extended Long Short-Term Memory",
NeurIPS 2024, section 2.3), with its stabilised exponential input gate.

Per head, with the state (C, n, m) and inputs q_t, k_t, v_t, the gate pre-activations i~_t, f~_t::

    log f_t = log sigmoid(f~_t)                      (or f~_t with forget="exp")
    m_t     = max(log f_t + m_{t-1}, i~_t)           stabiliser
    i'_t    = exp(i~_t - m_t)                        stabilised input gate
    f'_t    = exp(log f_t + m_{t-1} - m_t)           stabilised forget gate
    C_t     = f'_t C_{t-1} + i'_t k_t v_t^T          (DK, DV)
    n_t     = f'_t n_{t-1} + i'_t k_t                (DK,)
    h~_t    = C_t^T q_t s / (max(|n_t^T q_t s|, exp(-m_t)) + eps)
    h_t     = o_t * h~_t,   o_t = sigmoid(W_o x_t + b_o)   (the layer's output gate)

where s = DK^(-1/2) scales the query-key products, i~_t and f~_t are scalars per head, and m_t is
the log of the factor by which C and n are kept small: C_t = exp(-m_t) C*_t for the paper's
unstabilised C*_t, and likewise n_t. With eps = 0 this is the paper's
``h~_t = C*_t^T q_t / max(|n*_t^T q_t|, 1)`` exactly, whatever m is. There is no hidden-to-hidden
recurrence: every gate reads x_t only, which is what makes the parallel and chunkwise forms of
:mod:`lstmkit.functional.mlstm` possible.

Where NX-AI's code (mlstm_kernels 2.0.6, xlstm 2.0.6) departs from the paper, lstmkit follows it:

* **eps in the normaliser.** NX-AI adds eps = 1e-6 to the *stabilised* denominator, so its weight
  relative to the paper's form is eps * exp(m_t) and depends on the stabiliser. ``eps=0`` gives
  the paper's form.
* **The scale s is applied to q, not to k** (mlstm_kernels). The output is the same; the states C
  and n are sqrt(DK) times those of the paper's (and xlstm's own) k / sqrt(DK).
* **The initial stabiliser.** A zero state has m_0 = 0, as mlstm_kernels' chunkwise and recurrent
  kernels and xlstm's step start. xlstm's parallel forward (and mlstm_kernels' parallel kernels)
  start from no state at all, which is m_0 = -inf here: pass a state with ``m = -inf`` to
  reproduce them bit for bit. The two differ only through eps (about 1e-6 relative).
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

GATES = ("q", "k", "v", "i", "f", "o")
"""Blocks of the input projection ``weight_ih`` rows, in order."""


class mLSTMState(NamedTuple):
    """The mLSTM state: matrix memory, normaliser, stabiliser."""

    C: torch.Tensor
    """(..., NH, DK, DV)"""
    n: torch.Tensor
    """(..., NH, DK)"""
    m: torch.Tensor
    """(..., NH)"""


@dataclass(frozen=True)
class mLSTMConfig(HeadedConfig):
    """What one mLSTM step computes; each head has its own DK x DV = D x D matrix memory."""

    family: ClassVar[str] = "mlstm"
    """The family's key (for the family registry of lstmkit.cells)."""
    init_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that only change the initialisation: none."""

    eps: float = 1e-6
    """Added to the stabilised normaliser (NX-AI's place for it); 0 is the paper's form."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ValueError(f"eps: expected a float >= 0, got {self.eps!r}")


def gate_sizes(cfg: mLSTMConfig) -> dict[str, int]:
    """Rows of each block of ``weight_ih``, in :data:`GATES` order."""
    H, NH = cfg.hidden_size, cfg.num_heads
    return {"q": H, "k": H, "v": H, "i": NH, "f": NH, "o": H}


OPTION_SETS = ({}, {"forget": "exp"}, {"eps": 0.0}, {"bias": False})
"""Options that together use every field of the config at least once (for the conformance
table)."""


def state_spec(cfg: mLSTMConfig) -> dict[str, tuple[int, ...]]:
    """State tensor name -> trailing shape."""
    NH, D = cfg.num_heads, cfg.head_size
    return {"C": (NH, D, D), "n": (NH, D), "m": (NH,)}


def parameter_spec(cfg: mLSTMConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape."""
    rows = sum(gate_sizes(cfg).values())
    spec = {"weight_ih": (rows, cfg.input_size)}
    if cfg.bias:
        spec["bias_ih"] = (rows,)
    return spec


def init_parameters(cfg: mLSTMConfig, params: dict[str, torch.Tensor]) -> None:
    """torch.nn.Linear's uniform draw for the weights; NX-AI's gate biases: forget 3..6 spread
    over the heads (long memory at the start), input N(0, 0.1), the rest 0."""
    bound = 1.0 / math.sqrt(cfg.input_size)
    with torch.no_grad():
        params["weight_ih"].uniform_(-bound, bound)
        if "bias_ih" in params:
            blocks = params["bias_ih"].split(list(gate_sizes(cfg).values()))
            named = dict(zip(GATES, blocks))
            for name in ("q", "k", "v", "o"):
                named[name].zero_()
            named["f"].copy_(torch.linspace(3.0, 6.0, cfg.num_heads))
            named["i"].normal_(0.0, 0.1)


def zero_state(cfg: mLSTMConfig, leading: tuple[int, ...], like: torch.Tensor) -> mLSTMState:
    return mLSTMState(*(like.new_zeros(leading + shape) for shape in state_spec(cfg).values()))


def split_input(z: torch.Tensor, cfg: mLSTMConfig):
    """The input term z (..., G) -> q, k, v (..., NH, D); i, f (..., NH); o (..., H)."""
    q, k, v, i, f, o = z.split(list(gate_sizes(cfg).values()), dim=-1)
    heads = (cfg.num_heads, cfg.head_size)
    return (q.unflatten(-1, heads), k.unflatten(-1, heads), v.unflatten(-1, heads), i, f, o)


def input_term(x: torch.Tensor, weights: dict[str, torch.Tensor], cfg: mLSTMConfig):
    """x (..., I) -> the projections (..., G) for all steps at once."""
    return F.linear(x, weights["weight_ih"], weights.get("bias_ih"))


def step(q, k, v, i, f, state: mLSTMState, *, eps: float = 1e-6, forget: str = "sigmoid"):
    """One step over heads: q, k (B, NH, DK), v (B, NH, DV), i, f (B, NH) -> (h~ (B, NH, DV),
    state). The reference the parallel and chunkwise forms are tested against."""
    C, n, m = state
    logf = log_forget(f, forget)
    m_new = torch.maximum(logf + m, i)  # (B, NH)
    f_ = torch.exp(logf + m - m_new)[..., None]
    i_ = torch.exp(i - m_new)[..., None]
    C = f_[..., None] * C + i_[..., None] * (k[..., :, None] * v[..., None, :])  # (B, NH, DK, DV)
    n = f_ * n + i_ * k  # (B, NH, DK)
    qs = q * q.shape[-1] ** -0.5
    num = (qs[..., None, :] @ C).squeeze(-2)  # (B, NH, DV)
    den = (qs * n).sum(-1, keepdim=True)  # (B, NH, 1)
    h = num / (torch.maximum(den.abs(), torch.exp(-m_new)[..., None]) + eps)
    return h, mLSTMState(C, n, m_new)


def cell_step(z: torch.Tensor, state: mLSTMState, weights: dict[str, torch.Tensor],
              cfg: mLSTMConfig) -> tuple[torch.Tensor, mLSTMState]:
    """One step of the mLSTM cell from its input term z (B, G): (h_t = o_t * h~_t (B, H),
    state). The output is not part of the state (there is no hidden-to-hidden recurrence)."""
    q, k, v, i, f, o = split_input(z, cfg)
    h, state = step(q, k, v, i, f, state, eps=cfg.eps, forget=cfg.forget)
    return torch.sigmoid(o) * h.flatten(-2), state


def onnx_recurrence(body, q: str, k: str, v: str, i: str, f: str, state: list[str], *,
                    eps: float, forget: str, head_size: int) -> tuple[str, list[str]]:
    """:func:`step` in an ONNX graph: q, k, v (B, NH, D), i, f (B, NH) -> (h~ (B, NH, D),
    the names of (C, n, m))."""
    C, n, m = state
    last = body.const(np.array([-1]))
    logf = onnx_log_forget(body, f, forget)
    m_new = body.op("Max", body.op("Add", logf, m), i)  # (B, NH)
    f_ = body.op("Unsqueeze", body.op("Exp", body.op("Sub", body.op("Add", logf, m), m_new)),
                 last)  # (B, NH, 1)
    i_ = body.op("Unsqueeze", body.op("Exp", body.op("Sub", i, m_new)), last)
    kv = body.op("Mul", body.op("Unsqueeze", k, last),
                 body.op("Unsqueeze", v, body.const(np.array([-2]))))  # (B, NH, DK, DV)
    C = body.op("Add", body.op("Mul", body.op("Unsqueeze", f_, last), C),
                body.op("Mul", body.op("Unsqueeze", i_, last), kv))
    n = body.op("Add", body.op("Mul", f_, n), body.op("Mul", i_, k))
    qs = body.op("Mul", q, body.const(np.float32(head_size ** -0.5)))
    num = body.op("MatMul", body.op("Unsqueeze", qs, body.const(np.array([-2]))), C)
    num = body.op("Squeeze", num, body.const(np.array([-2])))  # (B, NH, DV)
    den = body.op("ReduceSum", body.op("Mul", qs, n), last, keepdims=1)  # (B, NH, 1)
    floor = body.op("Unsqueeze", body.op("Exp", body.op("Neg", m_new)), last)
    den = body.op("Add", body.op("Max", body.op("Abs", den), floor), body.const(np.float32(eps)))
    return body.op("Div", num, den), [C, n, m_new]


def onnx_step(body, cfg: mLSTMConfig, w: dict, state: list[str], x: str):
    """One step in an ONNX Scan body (see :class:`~lstmkit.cells.base.OnnxMapping`):
    (h_t = o_t * h~_t (B, H), the names of (C, n, m))."""
    z = body.gate_term(x, w["weight_ih"], w.get("bias_ih"))
    sizes = list(gate_sizes(cfg).values())
    q, k, v, i, f, o = body.op("Split", z, body.const(np.array(sizes)), axis=-1, outputs=6)
    heads = body.const(np.array([0, cfg.num_heads, cfg.head_size]))
    q, k, v = (body.op("Reshape", t, heads) for t in (q, k, v))  # (B, NH, D)
    h, state = onnx_recurrence(body, q, k, v, i, f, state, eps=cfg.eps, forget=cfg.forget,
                               head_size=cfg.head_size)
    h = body.op("Reshape", h, body.const(np.array([0, cfg.hidden_size])))
    return body.op("Mul", body.op("Sigmoid", o), h), state


FAMILY = Family(
    key="mlstm", config=mLSTMConfig, gates=GATES, state=state_spec, make_state=mLSTMState,
    parameters=parameter_spec, init=init_parameters, input=input_term, step=cell_step,
    torch=None, step_output=True, option_sets=OPTION_SETS,
    onnx=OnnxMapping(operator=None, gates=GATES, options={}, attributes=lambda cfg, d: {},
                     step=onnx_step))
"""The mLSTM in the family registry: its output h_t is no part of its state (C, n, m), so
``step_output``; the layer, the reference backend, the streaming engine and the conformance
table run its :func:`cell_step`; ONNX export is a Scan over :func:`onnx_step` (no ONNX operator
computes it); the NumPy runtime's step is in :mod:`lstmkit.runtime.xlstm`."""
