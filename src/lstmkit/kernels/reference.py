"""The reference backend: the cells' plain-PyTorch steps in a Python loop over time.

It is the specification every other backend is tested against, and declares everything: any
registered family, option, dtype, device and layer feature.

In bfloat16 and float16 it upcasts: the recurrence runs in float32 on the 16-bit weights,
inputs and state (exactly converted), and the output and final state are rounded to the 16-bit
dtype once, at the end of the call; autograd rounds each gradient once, to its tensor's dtype.
That is the most a 16-bit backend can promise ("16-bit storage, float32 arithmetic"), and what
the 16-bit rows of the conformance table measure everything else against. Plain PyTorch op by
op in 16 bits (torch.nn's own bfloat16 LSTM) rounds every intermediate instead, and float16's
range overflows in the exponential gates of the xLSTM families.
"""

from __future__ import annotations

import torch

from lstmkit.cells.base import ANY, Family, hidden, map_state, state_tensors
from lstmkit.config import CellConfig
from lstmkit.kernels.contract import Backend, Declaration, StepMasks

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
"""The dtypes the reference upcasts to float32 (see the module docstring)."""


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
         lengths: torch.Tensor | None, masks: StepMasks):
    """One layer in one direction over time.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    Past a sequence's length its state stays as it was and its output is zero.
    """
    return _upcast(scan_in_dtype, family, cfg, w, x, state, lengths, masks)


def recurrence(family: Family, cfg: CellConfig, w: dict, gx: torch.Tensor, state,
               lengths: torch.Tensor | None, masks: StepMasks):
    """:func:`scan` from the input terms ``gx`` (T, B, G*H) on: the time loop alone, for a
    backend that computes the input term itself (Triton's); ``w`` needs only the recurrent
    weights."""
    return _upcast(recurrence_in_dtype, family, cfg, w, gx, state, lengths, masks)


def _upcast(run, family, cfg, w, x, state, lengths, masks):
    """``run(family, cfg, w, x, state, lengths, masks)``, in float32 for 16-bit x (the module
    docstring) and rounded back to x's dtype."""
    if x.dtype not in SIXTEEN_BIT:
        return run(family, cfg, w, x, state, lengths, masks)

    def up(t):
        return None if t is None else t.float()

    masks = StepMasks(up(masks.hidden),
                      None if masks.zoneout is None else tuple(map(up, masks.zoneout)))
    y, final = run(family, cfg, {name: up(t) for name, t in w.items()}, up(x),
                   map_state(family, up, state), lengths, masks)
    return y.to(x.dtype), map_state(family, lambda t: t.to(x.dtype), final)


def scan_in_dtype(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
                  lengths: torch.Tensor | None, masks: StepMasks):
    """:func:`scan` with every operation in x's dtype, 16-bit ones too: plain PyTorch op by op
    (the tests' 16-bit baseline)."""
    gx = family.input(x, w, cfg)  # (T, B, G*H): the input term of every step in one product
    return recurrence_in_dtype(family, cfg, w, gx, state, lengths, masks)


def recurrence_in_dtype(family: Family, cfg: CellConfig, w: dict, gx: torch.Tensor, state,
                        lengths: torch.Tensor | None, masks: StepMasks):
    """The time loop of :func:`scan_in_dtype`, from the input terms ``gx`` (T, B, G*H) on."""
    valid = None if lengths is None else (
        torch.arange(gx.shape[0])[:, None] < lengths[None, :]).to(gx.device)  # (T, B)
    outputs = []
    for t in range(gx.shape[0]):
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
