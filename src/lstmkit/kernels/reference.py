"""The reference backend: the cells' plain-PyTorch steps in a Python loop over time.

It is the specification every other backend is tested against, and declares everything: any
registered family, option, dtype, device and layer feature.
"""

from __future__ import annotations

import torch

from lstmkit.cells.base import ANY, Family, hidden, map_state, state_tensors
from lstmkit.config import CellConfig
from lstmkit.kernels.contract import Backend, Declaration, StepMasks


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
         lengths: torch.Tensor | None, masks: StepMasks):
    """One layer in one direction over time.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    Past a sequence's length its state stays as it was and its output is zero.
    """
    gx = family.input(x, w, cfg)  # (T, B, G*H): the input term of every step in one product
    valid = None if lengths is None else (
        torch.arange(x.shape[0])[:, None] < lengths[None, :]).to(x.device)  # (T, B)
    outputs = []
    for t in range(x.shape[0]):
        recurrent = state if masks.hidden is None else _drop_hidden(family, state, masks.hidden)
        new = family.step(gx[t], recurrent, w, cfg)
        out, new = new if family.step_output else (None, new)
        if masks.zoneout is not None:
            keep = [z[t] for z in masks.zoneout]
            new = family.make_state(*(z * prev + (1 - z) * cur for z, prev, cur
                                      in zip(keep, state_tensors(state), state_tensors(new))))
        if valid is not None:
            v = valid[t]
            new = map_state(family, lambda prev, cur, v=v: torch.where(_rows(v, cur), cur, prev),
                            state, new)
            out = hidden(new) if out is None else out
            outputs.append(out * _rows(v, out))
        else:
            outputs.append(hidden(new) if out is None else out)
        state = new
    return torch.stack(outputs), state


def _rows(valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """valid (B,) shaped to broadcast over a state tensor (B, ...) of any rank."""
    return valid.view(valid.shape + (1,) * (like.dim() - 1))


def _drop_hidden(family, state, mask):
    tensors = list(state_tensors(state))
    tensors[0] = tensors[0] * mask
    return family.make_state(*tensors)


BACKEND = Backend(name="reference", declaration=Declaration(families=ANY), scan=scan)
