r"""Families that exist only in the tests, each registered in one line: they prove that a new
family is one module and one registry line, and that every part of lstmkit computes it or
refuses it with a reason.

``mgu_test``, a minimal gated unit (Zhou et al. 2016, with the reset gate dropped)::

    z   = σ(W_z x_t + b_iz + U_z h_{t-1} + b_hz)
    n   = tanh(W_n x_t + b_in + U_n h_{t-1} + b_hn)
    h_t = (1 - z) ⊙ h_{t-1} + z ⊙ n

``outer_test``, a matrix memory written by outer products, without recurrent weights (the
shape of xLSTM's mLSTM: its output h_t is no part of its state, ``step_output``)::

    q, k, v = W_{q,k,v} x_t + b_{q,k,v}                           (H each)
    f   = σ(W_f x_t + b_f)
    C_t = f ⊙_rows C_{t-1} + v k^T                                 (H, H)
    n_t = f ⊙ n_{t-1} + k                                          (H)
    h_t = tanh(C_t q / max(|n_t · q|, 1))

where x_t is the input (I), h the output (H), W the rows of ``weight_ih``, U of ``weight_hh``,
b the biases.
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
    C: torch.Tensor  # (B, H, H)
    n: torch.Tensor  # (B, H)


def _outer_parameters(cfg):
    gh = 4 * cfg.hidden_size
    return {"weight_ih": (gh, cfg.input_size), **({"bias_ih": (gh,)} if cfg.bias else {})}


def _outer_step(gx, state, w, cfg):
    C, n = state
    q, k, v, a_f = gx.chunk(4, dim=-1)  # (B, H) each
    f = torch.sigmoid(a_f)
    C = f[..., None] * C + v[..., :, None] * k[..., None, :]
    n = f * n + k
    scale = (n * q).sum(-1, keepdim=True).abs().clamp(min=1.0)
    return torch.tanh((C @ q[..., None])[..., 0] / scale), OuterState(C, n)


OUTER = register(Family(
    key="outer_test", config=OuterConfig, gates=("q", "k", "v", "f"),
    state=lambda cfg: {"C": (cfg.hidden_size, cfg.hidden_size), "n": (cfg.hidden_size,)},
    make_state=OuterState, parameters=_outer_parameters, init=uniform_init, input=_input,
    step=_outer_step, step_output=True, option_sets=({}, {"bias": False})))
