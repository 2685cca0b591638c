"""The parameters of one cell: names, shapes and initialisation, shared by cells and layers.

Names follow torch.nn (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, ``weight_hr``); the
variants' tensors follow the same pattern. Layers append ``_l{k}`` and ``_reverse``.

Shapes (G gates, H hidden, P output = proj_size or H, I input):
    weight_ih (G*H, I), weight_hh (G*H, P), bias_ih (G*H), bias_hh (G*H), weight_hr (P, H),
    weight_peephole (3*H) in order i, f, o, weight_ln_ih (G*H), weight_ln_hh (G*H),
    weight_ln_c (H), bias_ln_c (H).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from lstmkit.config import CellConfig

LSTM_GATES = ("i", "f", "g", "o")
"""torch.nn's LSTM gate order in every G*H tensor: input, forget, cell candidate, output."""
GRU_GATES = ("r", "z", "n")
"""torch.nn's GRU gate order: reset, update, new."""


class CellWeights(NamedTuple):
    """One cell's tensors; absent ones are None. Shapes in the module docstring."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: torch.Tensor | None = None
    bias_hh: torch.Tensor | None = None
    weight_hr: torch.Tensor | None = None
    weight_peephole: torch.Tensor | None = None
    weight_ln_ih: torch.Tensor | None = None
    weight_ln_hh: torch.Tensor | None = None
    weight_ln_c: torch.Tensor | None = None
    bias_ln_c: torch.Tensor | None = None




def parameter_shapes(cfg: CellConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the cell has, torch.nn's first, in torch.nn's order."""
    gh, h, p = cfg.gate_count * cfg.hidden_size, cfg.hidden_size, cfg.output_size
    shapes = {"weight_ih": (gh, cfg.input_size), "weight_hh": (gh, p)}
    if cfg.bias:
        shapes.update(bias_ih=(gh,), bias_hh=(gh,))
    if cfg.proj_size:
        shapes["weight_hr"] = (p, h)
    if cfg.peephole:
        shapes["weight_peephole"] = (3 * h,)
    if cfg.layer_norm:
        shapes.update(weight_ln_ih=(gh,), weight_ln_hh=(gh,), weight_ln_c=(h,), bias_ln_c=(h,))
    return shapes


@torch.no_grad()
def reset_parameters(cfg: CellConfig, params: dict[str, torch.Tensor]) -> None:
    """Initialise ``params`` in place: torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for every weight and
    bias, ones and zeros for layer-norm gains and biases, then the gate-bias options.

    The draws happen in torch.nn's order, so under the same seed a plain configuration gets the
    same numbers as torch.nn.
    """
    bound = 1.0 / math.sqrt(cfg.hidden_size)
    for name, tensor in params.items():
        if name.startswith("weight_ln"):
            tensor.fill_(1.0)
        elif name.startswith("bias_ln"):
            tensor.zero_()
        else:
            tensor.uniform_(-bound, bound)
    _init_gate_biases(cfg, params)


def _init_gate_biases(cfg: CellConfig, params: dict[str, torch.Tensor]) -> None:
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
        rows = slice(LSTM_GATES.index(gate) * h, (LSTM_GATES.index(gate) + 1) * h)
        params["bias_ih"][rows] = value
        params["bias_hh"][rows] = 0.0
