r"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

One step, gate order ``i, f, g, o`` (:data:`~lstmkit.cells.weights.LSTM_GATES`)::

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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lstmkit.activations import ACTIVATIONS
from lstmkit.cells.base import Family, RecurrentCell
from lstmkit.cells.weights import CellWeights
from lstmkit.config import CellConfig

LN_EPS = 1e-5


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


def lstm_input(x: torch.Tensor, w: CellWeights, cfg: CellConfig) -> torch.Tensor:
    """The input term of the gates, for any number of steps at once.

    Shape: x (..., I) -> (..., 4H): ``W_ih x + b_ih``, or ``LN(W_ih x; γ_ih) + b_ih``.
    """
    return _gate_term(x, w.weight_ih, w.bias_ih, w.weight_ln_ih)


def _gate_term(v, weight, bias, ln_weight):
    if ln_weight is None:
        return F.linear(v, weight, bias)
    term = _layer_norm(v @ weight.t(), ln_weight)
    return term if bias is None else term + bias


def lstm_step(gx: torch.Tensor, state: LSTMState, w: CellWeights, cfg: CellConfig) -> LSTMState:
    """One step from the input term ``gx`` (B, 4H) of :func:`lstm_input` and the state."""
    h, c = state
    gh = _gate_term(h, w.weight_hh, w.bias_hh, w.weight_ln_hh)
    a_i, a_f, a_g, a_o = (gx + gh).chunk(4, dim=-1)
    if cfg.peephole:
        p_i, p_f, p_o = w.weight_peephole.chunk(3)  # (H,) each
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
    c_out = _layer_norm(c, w.weight_ln_c, w.bias_ln_c) if cfg.layer_norm else c
    h = o * ACTIVATIONS[cfg.output_activation](c_out)
    if w.weight_hr is not None:
        h = h @ w.weight_hr.t()
    return LSTMState(h, c)


def _clipper(clip: float | None):
    if clip is None:
        return lambda a: a
    return lambda a: a.clamp(-clip, clip)


FAMILY = Family(input=lstm_input, step=lstm_step, state_names=("h", "c"), make_state=LSTMState)


class LSTMCell(RecurrentCell):
    """One LSTM step; a drop-in for ``torch.nn.LSTMCell`` that also takes the variants.

    Args:
        input_size: features of x_t, I.
        hidden_size: units of c_t, H.
        bias: whether there are ``bias_ih`` and ``bias_hh``.
        device, dtype: where and how the parameters are made.
        **options: any LSTM field of :class:`~lstmkit.config.CellConfig` (``proj_size``,
            ``peephole``, ``coupled``, ``cell_clip``, the three activations, ``layer_norm``,
            ``forget_bias``, ``input_bias``, ``chrono``).

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
        config = CellConfig("lstm", input_size, hidden_size, bias, **options)
        super().__init__(config, device, dtype)
