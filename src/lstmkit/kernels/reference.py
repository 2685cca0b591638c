"""The reference backend: the cells' plain-PyTorch steps in a Python loop over time.

It is the specification every other backend is tested against, and runs every configuration.
"""

from __future__ import annotations

import torch

from lstmkit.cells import FAMILIES
from lstmkit.cells.base import hidden, map_state, state_tensors
from lstmkit.cells.weights import CellWeights
from lstmkit.config import CellConfig
from lstmkit.kernels import Backend
from lstmkit.layers.stack import StepMasks, stack_of


def scan(cfg: CellConfig, w: CellWeights, x: torch.Tensor, state, lengths: torch.Tensor | None,
         masks: StepMasks):
    """One layer in one direction over time.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    Past a sequence's length its state stays as it was and its output is zero.
    """
    family = FAMILIES[cfg.mode]
    gx = family.input(x, w, cfg)  # (T, B, G*H): the input term of every step in one product
    valid = None if lengths is None else (
        torch.arange(x.shape[0])[:, None] < lengths[None, :]).to(x.device)[..., None]  # (T, B, 1)
    outputs = []
    for t in range(x.shape[0]):
        recurrent = state if masks.hidden is None else _drop_hidden(family, state, masks.hidden)
        new = family.step(gx[t], recurrent, w, cfg)
        if masks.zoneout is not None:
            keep = [z[t] for z in masks.zoneout]
            new = family.make_state(*(z * prev + (1 - z) * cur for z, prev, cur
                                      in zip(keep, state_tensors(state), state_tensors(new))))
        if valid is not None:
            v = valid[t]
            new = map_state(family, lambda prev, cur, v=v: torch.where(v, cur, prev), state, new)
            outputs.append(hidden(new) * v)
        else:
            outputs.append(hidden(new))
        state = new
    return torch.stack(outputs), state


def _drop_hidden(family, state, mask):
    tensors = list(state) if isinstance(state, tuple) else [state]
    tensors[0] = tensors[0] * mask
    return family.make_state(*tensors)


def supports(config, device, dtype, training) -> str | None:
    return None


BACKEND = Backend(name="reference", run=stack_of(scan), supports=supports)
