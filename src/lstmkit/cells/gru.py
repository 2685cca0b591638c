r"""The GRU cell (Cho et al. 2014), torch.nn's form by default.

One step, gate order ``r, z, n`` (:data:`GATES`)::

    r   = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z   = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))       reset_after=True (torch.nn)
    n   = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)       reset_after=False (Cho et al.)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

where x_t is the input (I), h_{t-1} the previous state (H), W_i* the rows of ``weight_ih`` and
W_h* of ``weight_hh``. ``reset_after`` is ONNX's ``linear_before_reset``: torch.nn and cuDNN compute
the first form, the paper the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.cells.base import ANY, Family, OnnxMapping, RecurrentCell, TorchEquivalent
from lstmkit.cells.weights import torch_parameters, uniform_init
from lstmkit.config import CellConfig, _require_bool, cell_config

GATES = ("r", "z", "n")
"""torch.nn's GRU gate order: reset, update, new."""


@dataclass(frozen=True)
class GRUConfig(CellConfig):
    """What one GRU step computes."""

    family: ClassVar[str] = "gru"

    reset_after: bool = True
    """The reset gate multiplies after the recurrent product (torch.nn; ONNX
    ``linear_before_reset=1``); False is the paper's form, r multiplies h before it."""

    def __post_init__(self):
        super().__post_init__()
        _require_bool("reset_after", self.reset_after)


def gru_input(x: torch.Tensor, w: dict, cfg: GRUConfig) -> torch.Tensor:
    """The input term ``W_i x + b_i`` of the three gates. Shape: x (..., I) -> (..., 3H)."""
    return F.linear(x, w["weight_ih"], w.get("bias_ih"))


def gru_step(gx: torch.Tensor, h: torch.Tensor, w: dict, cfg: GRUConfig) -> torch.Tensor:
    """One step from the input term ``gx`` (B, 3H) and the state ``h`` (B, H)."""
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    w_hrz, w_hn = w["weight_hh"].split([2 * cfg.hidden_size, cfg.hidden_size])
    b_hh = w.get("bias_hh")
    b_hrz, b_hn = (None, None) if b_hh is None else b_hh.split(
        [2 * cfg.hidden_size, cfg.hidden_size])
    h_r, h_z = F.linear(h, w_hrz, b_hrz).chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    if cfg.reset_after:
        n = torch.tanh(x_n + r * F.linear(h, w_hn, b_hn))
    else:
        n = torch.tanh(x_n + F.linear(r * h, w_hn, b_hn))
    return (1.0 - z) * n + z * h


def onnx_step(body, cfg: GRUConfig, w: dict, state: list[str], x: str) -> list[str]:
    """One step in an ONNX Scan body (see :class:`~lstmkit.cells.base.OnnxMapping`)."""
    (h,), hidden = state, cfg.hidden_size
    x_r, x_z, x_n = body.split(body.gate_term(x, w["weight_ih"], w.get("bias_ih")), 3, hidden)
    w_r, w_z, w_n = body.op("Split", w["weight_hh"], body.const(np.array([hidden] * 3)), axis=1,
                            outputs=3)  # columns of the transposed (P, 3H) weight
    b_r, b_z, b_n = body.split(w["bias_hh"], 3, hidden) if "bias_hh" in w else (None,) * 3
    r = body.op("Sigmoid", body.op("Add", x_r, body.gate_term(h, w_r, b_r)))
    z = body.op("Sigmoid", body.op("Add", x_z, body.gate_term(h, w_z, b_z)))
    if cfg.reset_after:
        inner = body.op("Mul", r, body.gate_term(h, w_n, b_n))
    else:
        inner = body.gate_term(body.op("Mul", r, h), w_n, b_n)
    n = body.op("Tanh", body.op("Add", x_n, inner))
    keep = body.op("Sub", body.const(np.float32(1.0)), z)
    return [body.op("Add", body.op("Mul", keep, n), body.op("Mul", z, h))]


FAMILY = Family(
    key="gru", config=GRUConfig, gates=GATES,
    state=lambda cfg: {"h": (cfg.hidden_size,)}, make_state=lambda h: h,
    parameters=lambda cfg: torch_parameters(cfg, len(GATES)), init=uniform_init,
    input=gru_input, step=gru_step,
    torch=TorchEquivalent(nn.GRU, mode=lambda cfg: "GRU", op=lambda cfg: torch.gru,
                          options={"bias": ANY, "reset_after": (True,)}),
    onnx=OnnxMapping(operator="GRU", gates=("z", "r", "n"),  # ONNX calls the candidate "h"
                     options={"bias": ANY, "reset_after": ANY},
                     attributes=lambda cfg, d: {"linear_before_reset": int(cfg.reset_after)},
                     step=onnx_step),
    option_sets=({}, {"bias": False}, {"reset_after": False},
                 {"reset_after": False, "bias": False}),
)


class GRUCell(RecurrentCell):
    """One GRU step; a drop-in for ``torch.nn.GRUCell``.

    Args:
        input_size: features of x_t, I.
        hidden_size: units of h_t, H.
        bias: whether there are ``bias_ih`` and ``bias_hh``.
        device, dtype: where and how the parameters are made.
        reset_after: torch.nn's form (True) or the paper's (False); see the module docstring.

    Returns the new h. Shape: x (B, I) or (I,); h (B, H) or (H,).
    """

    family = FAMILY

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, *, reset_after: bool = True):
        config = cell_config("gru", input_size, hidden_size, bias, reset_after=reset_after)
        super().__init__(config, device, dtype)
