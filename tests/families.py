r"""Families that exist only in the tests, each registered in one line: they prove that a new
family is one module and one registry line, and that every part of lstmkit computes it or
refuses it with a reason.

``mgu_test``, a minimal gated unit (Zhou et al. 2016, with the reset gate dropped)::

    z   = σ(W_z x_t + b_iz + U_z h_{t-1} + b_hz)
    n   = tanh(W_n x_t + b_in + U_n h_{t-1} + b_hn)
    h_t = (1 - z) ⊙ h_{t-1} + z ⊙ n

``outer_test``, a matrix memory written by outer products (the shape of xLSTM's mLSTM state)::

    q, k, v = W_{q,k,v} x_t + b_i + U_{q,k,v} h_{t-1} + b_h      (H each)
    f   = σ(W_f x_t + b_if + U_f h_{t-1} + b_hf)
    C_t = f ⊙_rows C_{t-1} + v k^T                                 (H, H)
    h_t = tanh(C_t q / H)

where x_t is the input (I), h the output (H), W the rows of ``weight_ih``, U of ``weight_hh``.
Neither has a torch.nn equivalent or an ONNX mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from lstmkit.cells import register
from lstmkit.cells.base import Family
from lstmkit.cells.weights import torch_parameters, uniform_init
from lstmkit.config import CellConfig


@dataclass(frozen=True)
class MGUConfig(CellConfig):
    family: ClassVar[str] = "mgu_test"


def _input(x, w, cfg):
    return F.linear(x, w["weight_ih"], w.get("bias_ih"))


def _mgu_step(gx, h, w, cfg):
    a_z, a_n = (gx + F.linear(h, w["weight_hh"], w.get("bias_hh"))).chunk(2, dim=-1)
    z = torch.sigmoid(a_z)
    return (1.0 - z) * h + z * torch.tanh(a_n)


MGU = register(Family(
    key="mgu_test", config=MGUConfig, gates=("z", "n"),
    state=lambda cfg: {"h": (cfg.hidden_size,)}, make_state=lambda h: h,
    parameters=lambda cfg: torch_parameters(cfg, 2), init=uniform_init,
    input=_input, step=_mgu_step, option_sets=({}, {"bias": False})))


@dataclass(frozen=True)
class OuterConfig(CellConfig):
    family: ClassVar[str] = "outer_test"


class OuterState(NamedTuple):
    h: torch.Tensor  # (B, H)
    C: torch.Tensor  # (B, H, H)


def _outer_step(gx, state, w, cfg):
    h, C = state
    a = gx + F.linear(h, w["weight_hh"], w.get("bias_hh"))
    q, k, v, a_f = a.chunk(4, dim=-1)  # (B, H) each
    C = torch.sigmoid(a_f)[..., None] * C + v[..., :, None] * k[..., None, :]
    return OuterState(torch.tanh((C @ q[..., None])[..., 0] / cfg.hidden_size), C)


OUTER = register(Family(
    key="outer_test", config=OuterConfig, gates=("q", "k", "v", "f"),
    state=lambda cfg: {"h": (cfg.hidden_size,), "C": (cfg.hidden_size, cfg.hidden_size)},
    make_state=OuterState, parameters=lambda cfg: torch_parameters(cfg, 4), init=uniform_init,
    input=_input, step=_outer_step, option_sets=({},)))
