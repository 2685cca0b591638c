r"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

One step, gate order ``i, f, g, o`` (:data:`GATES`)::

    a   = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i   = σ(a_i + p_i ⊙ c_{t-1})
    f   = σ(a_f + p_f ⊙ c_{t-1})          coupled: f = 1 - i
    g   = φ(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    o   = σ(a_o + p_o ⊙ c_t)
    h_t = o ⊙ ψ(c_t)                       proj_size > 0: h_t = W_hr (o ⊙ ψ(c_t))

where x_t is the input (I), h_{t-1} the previous output (P = proj_size or H), c_{t-1} the cell
state (H); a the gate pre-activations (4H); σ, φ, ψ the gate, cell and output activations
(sigmoid, tanh, tanh by default: ONNX's f, g, h); p = (p_i, p_f, p_o) the peepholes
(``weight_peephole``, absent unless ``peephole``; Gers & Schmidhuber 2000: i and f see c_{t-1},
o sees c_t, as ONNX's P). With ``cell_clip`` = κ each gate pre-activation (peephole term included)
is clipped to [-κ, κ] before its activation, as ONNX Runtime does with ``clip``.

With ``layer_norm`` (Ba et al. 2016, eqs. 20-22) the input and recurrent terms are normalised
separately over all 4H pre-activations, and c_t before the output activation::

    a   = LN(W_ih x_t; γ_ih) + LN(W_hh h_{t-1}; γ_hh) + b_ih + b_hh
    h_t = o ⊙ ψ(LN(c_t; γ_c, β_c))

where LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5) + β (γ: ``weight_ln_*``, β:
``bias_ln_c``; the gate terms get no β of their own, b_ih + b_hh already is one). The cell state
carried to the next step is the un-normalised c_t.

Greff et al.'s ablations remove a gate by fixing it to 1: ``input_gate=False`` (NIG),
``forget_gate=False`` (NFG: the original 1997 LSTM, whose cell state only accumulates) and
``output_gate=False`` (NOG). The removed gate's rows stay in every tensor and get no gradient.

A coupled cell (CIFG, Greff et al. 2017: f = 1 - i) ties the two gates so that i = 1 - f. The
input gate carries the parameters, as in Greff et al. and in ONNX Runtime's ``input_forget``
(checked in the tests); the f rows of every tensor stay, so the layout is still torch's, and get
no gradient. ``forget_bias`` on a coupled cell therefore sets the input bias to its negative.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.activations import ACTIVATIONS
from lstmkit.cells.base import ANY, Family, OnnxMapping, RecurrentCell, TorchEquivalent
from lstmkit.cells.weights import gate_rows, torch_parameters, uniform_init
from lstmkit.config import (
    CellConfig,
    _require_activation,
    _require_bool,
    _require_int,
    _require_optional_real,
    cell_config,
)

LN_EPS = 1e-5
GATES = ("i", "f", "g", "o")
"""torch.nn's LSTM gate order in every G*H tensor: input, forget, cell candidate, output."""
PEEPHOLES = ("i", "f", "o")
"""Order of the three peephole vectors inside ``weight_peephole``."""


@dataclass(frozen=True)
class LSTMConfig(CellConfig):
    """What one LSTM step computes: torch.nn's LSTM and its variants."""

    family: ClassVar[str] = "lstm"
    init_fields: ClassVar[frozenset[str]] = frozenset({"forget_bias", "input_bias", "chrono"})

    proj_size: int = 0
    """Project h to this many units with ``weight_hr`` (0: no projection)."""
    peephole: bool = False
    """Gates i and f see c_{t-1}, gate o sees c_t (Gers & Schmidhuber 2000)."""
    coupled: bool = False
    """The forget gate is tied to the input gate, f = 1 - i (CIFG, ONNX ``input_forget``)."""
    input_gate: bool = True
    """False fixes i = 1 (Greff et al.'s NIG)."""
    forget_gate: bool = True
    """False fixes f = 1, the original 1997 LSTM without a forget gate (NFG)."""
    output_gate: bool = True
    """False fixes o = 1 (NOG)."""
    cell_clip: float | None = None
    """Clip the gate pre-activations to [-clip, clip] (ONNX ``clip``)."""
    gate_activation: str = "sigmoid"
    """The activation of gates i, f, o (ONNX's f)."""
    cell_activation: str = "tanh"
    """The activation of the candidate g (ONNX's g)."""
    output_activation: str = "tanh"
    """The activation applied to c_t before the output gate (ONNX's h)."""
    layer_norm: bool = False
    """Layer normalisation of the gate pre-activations and of c_t (Ba et al. 2016)."""
    forget_bias: float | None = None
    """Initial total forget-gate bias (``bias_ih`` gets it, ``bias_hh`` 0)."""
    input_bias: float | None = None
    """Initial total input-gate bias, like ``forget_bias``."""
    chrono: int | None = None
    """Chrono initialisation for dependencies up to this many steps (T_max): forget bias
    log(U[1, T_max - 1]), input bias its negative (Tallec & Ollivier 2018)."""

    def __post_init__(self):
        super().__post_init__()
        _require_int("proj_size", self.proj_size, 0)
        for name in ("peephole", "coupled", "layer_norm", "input_gate", "forget_gate",
                     "output_gate"):
            _require_bool(name, getattr(self, name))
        for name in ("gate_activation", "cell_activation", "output_activation"):
            _require_activation(name, getattr(self, name))
        if self.proj_size and self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected 0 or less than hidden_size={self.hidden_size}, "
                             f"got {self.proj_size}")
        if self.coupled and not (self.input_gate and self.forget_gate):
            raise ValueError("coupled: expected input_gate=True and forget_gate=True (coupling "
                             "derives f from i), got a removed gate")
        if self.cell_clip is not None and not (
            isinstance(self.cell_clip, numbers.Real) and not isinstance(self.cell_clip, bool)
            and self.cell_clip > 0
        ):
            raise ValueError("cell_clip: expected None or a positive float, "
                             f"got {self.cell_clip!r}")
        self._check_init_options()

    def _check_init_options(self) -> None:
        wanted = [n for n in ("forget_bias", "input_bias", "chrono")
                  if getattr(self, n) is not None]
        if wanted and not self.bias:
            raise ValueError(f"{', '.join(wanted)}: expected bias=True, got bias=False")
        if self.chrono is not None:
            _require_int("chrono", self.chrono, 3)
            if self.forget_bias is not None or self.input_bias is not None:
                raise ValueError("chrono: expected without forget_bias/input_bias, got both")
        if self.coupled and self.input_bias is not None and self.forget_bias is not None:
            raise ValueError("forget_bias, input_bias: expected one of them with coupled=True "
                             "(f = 1 - i ties the two), got both")
        if self.forget_bias is not None and not (self.forget_gate or self.coupled):
            raise ValueError("forget_bias: expected forget_gate=True, got forget_gate=False")
        if self.input_bias is not None and not self.input_gate:
            raise ValueError("input_bias: expected input_gate=True, got input_gate=False")
        for name in ("forget_bias", "input_bias"):
            _require_optional_real(name, getattr(self, name))

    @property
    def output_size(self) -> int:
        """Units of h_t: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size


class LSTMState(NamedTuple):
    """The state of an LSTM: unpacks as ``(h, c)`` like torch.nn's tuple.

    Shape: layers use (L*D, B, P) for ``h`` and (L*D, B, H) for ``c``; a cell (B, P) and (B, H).
    """

    h: torch.Tensor
    c: torch.Tensor

    def detach(self) -> LSTMState:
        """The same values cut from the graph, for truncated backpropagation through time."""
        return LSTMState(self.h.detach(), self.c.detach())


def _layer_norm(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    return F.layer_norm(v, v.shape[-1:], weight, bias, LN_EPS)


def lstm_input(x: torch.Tensor, w: dict, cfg: LSTMConfig) -> torch.Tensor:
    """The input term of the gates, for any number of steps at once.

    Shape: x (..., I) -> (..., 4H): ``W_ih x + b_ih``, or ``LN(W_ih x; γ_ih) + b_ih``.
    """
    return _gate_term(x, w["weight_ih"], w.get("bias_ih"), w.get("weight_ln_ih"))


def _gate_term(v, weight, bias, ln_weight):
    if ln_weight is None:
        return F.linear(v, weight, bias)
    term = _layer_norm(v @ weight.t(), ln_weight)
    return term if bias is None else term + bias


def lstm_step(gx: torch.Tensor, state: LSTMState, w: dict, cfg: LSTMConfig) -> LSTMState:
    """One step from the input term ``gx`` (B, 4H) of :func:`lstm_input` and the state."""
    h, c = state
    gh = _gate_term(h, w["weight_hh"], w.get("bias_hh"), w.get("weight_ln_hh"))
    a_i, a_f, a_g, a_o = (gx + gh).chunk(4, dim=-1)
    if cfg.peephole:
        p_i, p_f, p_o = w["weight_peephole"].chunk(3)  # (H,) each
        a_i, a_f = a_i + p_i * c, a_f + p_f * c
    sigma = ACTIVATIONS[cfg.gate_activation]
    clip = _clipper(cfg.cell_clip)
    i = sigma(clip(a_i)) if cfg.input_gate else 1.0
    if cfg.coupled:
        f = 1.0 - i
    else:
        f = sigma(clip(a_f)) if cfg.forget_gate else 1.0
    c = f * c + i * ACTIVATIONS[cfg.cell_activation](clip(a_g))
    if cfg.peephole:
        a_o = a_o + p_o * c
    o = sigma(clip(a_o)) if cfg.output_gate else 1.0
    c_out = _layer_norm(c, w["weight_ln_c"], w["bias_ln_c"]) if cfg.layer_norm else c
    h = o * ACTIVATIONS[cfg.output_activation](c_out)
    if w.get("weight_hr") is not None:
        h = h @ w["weight_hr"].t()
    return LSTMState(h, c)


def _clipper(clip: float | None):
    if clip is None:
        return lambda a: a
    return lambda a: a.clamp(-clip, clip)


def parameters(cfg: LSTMConfig) -> dict[str, tuple[int, ...]]:
    """torch.nn's tensors (``weight_hr`` (P, H) with a projection), then the variants':
    ``weight_peephole`` (3H) in order i, f, o, ``weight_ln_ih``, ``weight_ln_hh`` (4H),
    ``weight_ln_c``, ``bias_ln_c`` (H)."""
    h, p = cfg.hidden_size, cfg.output_size
    shapes = torch_parameters(cfg, len(GATES), p)
    if cfg.proj_size:
        shapes["weight_hr"] = (p, h)
    if cfg.peephole:
        shapes["weight_peephole"] = (3 * h,)
    if cfg.layer_norm:
        gh = len(GATES) * h
        shapes.update(weight_ln_ih=(gh,), weight_ln_hh=(gh,), weight_ln_c=(h,), bias_ln_c=(h,))
    return shapes


@torch.no_grad()
def init(cfg: LSTMConfig, params: dict[str, torch.Tensor]) -> None:
    """torch.nn's draws (:func:`~lstmkit.cells.weights.uniform_init`), then the gate biases."""
    uniform_init(cfg, params)
    h = cfg.hidden_size
    forget, input_ = cfg.forget_bias, cfg.input_bias
    if cfg.chrono is not None:
        bias_ih = params["bias_ih"]
        forget = torch.log(torch.empty(h, dtype=bias_ih.dtype, device=bias_ih.device)
                           .uniform_(1.0, cfg.chrono - 1.0))
        input_ = -forget
    if cfg.coupled and forget is not None:  # f = 1 - i = σ(-a_i): the input rows carry it
        forget, input_ = None, -forget
    for gate, value in (("f", forget), ("i", input_)):
        if value is None:
            continue
        rows = gate_rows(GATES, gate, h)
        params["bias_ih"][rows] = value
        params["bias_hh"][rows] = 0.0


def onnx_step(body, cfg: LSTMConfig, w: dict, state: list[str], x: str) -> list[str]:
    """One step in an ONNX Scan body (see :class:`~lstmkit.cells.base.OnnxMapping`)."""
    h, c = state
    hidden = cfg.hidden_size
    a = body.op("Add", body.gate_term(x, w["weight_ih"], w.get("bias_ih"), w.get("weight_ln_ih")),
                body.gate_term(h, w["weight_hh"], w.get("bias_hh"), w.get("weight_ln_hh")))
    a_i, a_f, a_g, a_o = body.split(a, 4, hidden)
    if cfg.peephole:
        p_i, p_f, p_o = body.split(w["weight_peephole"], 3, hidden)
        a_i, a_f = (body.op("Add", a_, body.op("Mul", p, c)) for a_, p in ((a_i, p_i), (a_f, p_f)))
    clip = cfg.cell_clip

    def gate(v, activation, present=True):
        if not present:
            return None  # a removed gate is fixed to 1
        if clip is not None:
            v = body.op("Clip", v, body.const(np.float32(-clip)), body.const(np.float32(clip)))
        return body.act(activation, v)

    i = gate(a_i, cfg.gate_activation, cfg.input_gate)
    if cfg.coupled:
        f = body.op("Sub", body.const(np.float32(1.0)), i)
    else:
        f = gate(a_f, cfg.gate_activation, cfg.forget_gate)
    g = gate(a_g, cfg.cell_activation)
    kept = c if f is None else body.op("Mul", f, c)
    c_new = body.op("Add", kept, g if i is None else body.op("Mul", i, g))
    if cfg.peephole:
        a_o = body.op("Add", a_o, body.op("Mul", p_o, c_new))
    o = gate(a_o, cfg.gate_activation, cfg.output_gate)
    c_out = c_new
    if cfg.layer_norm:
        c_out = body.op("LayerNormalization", c_new, w["weight_ln_c"], w["bias_ln_c"], axis=-1,
                        epsilon=LN_EPS)
    h_new = body.act(cfg.output_activation, c_out)
    if o is not None:
        h_new = body.op("Mul", o, h_new)
    if "weight_hr" in w:
        h_new = body.op("MatMul", h_new, w["weight_hr"])
    return [h_new, c_new]


def _onnx_attributes(cfg: LSTMConfig, directions: int) -> dict:
    from lstmkit.activations import ONNX_NAMES

    names = (cfg.gate_activation, cfg.cell_activation, cfg.output_activation)
    attrs = {"activations": [ONNX_NAMES[n] for n in names] * directions,
             "input_forget": int(cfg.coupled)}
    if cfg.cell_clip is not None:
        attrs["clip"] = float(cfg.cell_clip)
    return attrs


# ONNX's recurrent activations compute every lstmkit activation the same way but identity (its
# Affine needs alpha and beta, which the operator's attributes cannot give per slot) and softplus
# (ONNX Runtime's recurrent Softplus overflows to inf above about 88 in float32); a Scan of
# elementwise operators computes those.
_ONNX_ACTIVATIONS = tuple(n for n in ACTIVATIONS if n not in ("identity", "softplus"))
_PLAIN = {"bias": ANY, "proj_size": ANY, "peephole": (False,), "coupled": (False,),
          "input_gate": (True,), "forget_gate": (True,), "output_gate": (True,),
          "cell_clip": (None,), "gate_activation": ("sigmoid",), "cell_activation": ("tanh",),
          "output_activation": ("tanh",), "layer_norm": (False,)}

FAMILY = Family(
    key="lstm", config=LSTMConfig, gates=GATES,
    state=lambda cfg: {"h": (cfg.output_size,), "c": (cfg.hidden_size,)},
    make_state=LSTMState, parameters=parameters, init=init, input=lstm_input, step=lstm_step,
    torch=TorchEquivalent(nn.LSTM, mode=lambda cfg: "LSTM", op=lambda cfg: torch.lstm,
                          options=_PLAIN),
    onnx=OnnxMapping(
        operator="LSTM", gates=("i", "o", "f", "g"),  # ONNX calls the candidate "c"
        options={**_PLAIN, "peephole": ANY, "coupled": ANY, "cell_clip": ANY,
                 "proj_size": (0,), "gate_activation": _ONNX_ACTIVATIONS,
                 "cell_activation": _ONNX_ACTIVATIONS, "output_activation": _ONNX_ACTIVATIONS},
        attributes=_onnx_attributes, step=onnx_step,
        extra_inputs=(("weight_peephole", PEEPHOLES, ("i", "o", "f")),)),
    option_sets=(
        {}, {"bias": False}, {"proj_size": 3}, {"peephole": True},
        {"peephole": True, "coupled": True, "cell_clip": 0.5},
        {"input_gate": False}, {"forget_gate": False}, {"output_gate": False},
        {"gate_activation": "hard_sigmoid", "cell_activation": "softsign",
         "output_activation": "identity"},
        {"cell_activation": "relu", "output_activation": "elu", "cell_clip": 2.0},
        {"gate_activation": "softplus", "cell_activation": "leaky_relu"},
        {"layer_norm": True}, {"layer_norm": True, "proj_size": 3, "peephole": True},
        {"forget_bias": 1.0}, {"chrono": 8},
    ),
)


class LSTMCell(RecurrentCell):
    """One LSTM step; a drop-in for ``torch.nn.LSTMCell`` that also takes the variants.

    Args:
        input_size: features of x_t, I.
        hidden_size: units of c_t, H.
        bias: whether there are ``bias_ih`` and ``bias_hh``.
        device, dtype: where and how the parameters are made.
        **options: any field of :class:`LSTMConfig` (``proj_size``, ``peephole``, ``coupled``,
            ``cell_clip``, the three activations, ``layer_norm``, ``forget_bias``,
            ``input_bias``, ``chrono``).

    Returns ``LSTMState(h, c)``, which unpacks as torch.nn's ``(h, c)``.

    Shape: x (B, I) or (I,); h (B, P), c (B, H).

    Examples:
        >>> cell = LSTMCell(3, 5, peephole=True)
        >>> h, c = cell(torch.zeros(2, 3))
        >>> tuple(h.shape), tuple(c.shape)
        ((2, 5), (2, 5))
    """

    family = FAMILY

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, **options):
        super().__init__(cell_config("lstm", input_size, hidden_size, bias, **options),
                         device, dtype)
