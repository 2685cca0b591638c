"""Parameter shapes and initialisation that the families built on torch.nn's layout share.

Names follow torch.nn (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``); a family's own
tensors follow the same pattern and its module adds them. Layers append ``_l{k}`` and
``_reverse``. Weights travel as a dict, name -> tensor; a tensor the configuration lacks is
absent (``w.get(name)`` is None).

Shapes (G gates, H hidden, P the width of h, I input):
    weight_ih (G*H, I), weight_hh (G*H, P), bias_ih (G*H), bias_hh (G*H).
"""

from __future__ import annotations

import math

import torch

from lstmkit.config import CellConfig


def torch_parameters(cfg: CellConfig, gates: int, recurrent: int | None = None
                     ) -> dict[str, tuple[int, ...]]:
    """torch.nn's tensors of a cell with ``gates`` gate blocks and h of width ``recurrent``
    (default H), in torch.nn's order."""
    gh = gates * cfg.hidden_size
    shapes = {"weight_ih": (gh, cfg.input_size), "weight_hh": (gh, recurrent or cfg.hidden_size)}
    if cfg.bias:
        shapes.update(bias_ih=(gh,), bias_hh=(gh,))
    return shapes


@torch.no_grad()
def uniform_init(cfg: CellConfig, params: dict[str, torch.Tensor]) -> None:
    """torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, ones and zeros for
    layer-norm gains and biases (names starting ``weight_ln`` / ``bias_ln``), in ``params``'
    order: under the same seed a plain configuration gets torch.nn's numbers."""
    bound = 1.0 / math.sqrt(cfg.hidden_size)
    for name, tensor in params.items():
        if name.startswith("weight_ln"):
            tensor.fill_(1.0)
        elif name.startswith("bias_ln"):
            tensor.zero_()
        else:
            tensor.uniform_(-bound, bound)


def gate_rows(gates: tuple[str, ...], gate: str, hidden: int) -> slice:
    """The rows of ``gate``'s block in a G*H tensor laid out in order ``gates``."""
    k = gates.index(gate)
    return slice(k * hidden, (k + 1) * hidden)
