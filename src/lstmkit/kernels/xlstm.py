"""The xlstm backend: the sLSTM's and mLSTM's own scans over whole sequences.

The reference backend runs a family's step once per time step. These scans compute the same
function faster: the sLSTM's (:func:`lstmkit.functional.slstm`) runs the heads as one batch of
small products per step with a hand-written backward pass, the mLSTM's
(:func:`lstmkit.functional.mlstm`) its chunkwise form, which needs no loop over the steps inside
a chunk (the mLSTM has no hidden-to-hidden recurrence). The lstmkit.sLSTM and lstmkit.mLSTM
layers call the same two functions.

bfloat16 and float16 layers run with float32 state and arithmetic within a call (the scans'
own rule, see :mod:`lstmkit.functional._precision`). A layer's state is in its parameters'
dtype (the layers' contract), so the final state is rounded to it on the way out and raised to
float32 on the way in; lstmkit.functional keeps it in float32 across calls.

Neither scan takes step masks, so the backend declares no zoneout and no recurrent dropout
(the reference runs those); stacking, direction and inter-layer dropout come from the layer.
"""

from __future__ import annotations

import torch

from lstmkit._transforms import static
from lstmkit.cells import mlstm as mlstm_cell
from lstmkit.cells import slstm as slstm_cell
from lstmkit.cells._heads import FORGET_GATES
from lstmkit.cells.base import ANY, Family
from lstmkit.config import CellConfig
from lstmkit.functional._precision import compute_dtype
from lstmkit.functional.mlstm import mlstm
from lstmkit.functional.slstm import slstm
from lstmkit.kernels.contract import Backend, Declaration, StepMasks


def slstm_scan(cfg: slstm_cell.sLSTMConfig, w: dict, x: torch.Tensor, state,
               lengths: torch.Tensor | None):
    """One sLSTM layer, batch-first: x (B, T, I) -> (h (B, T, H), sLSTMState)."""
    term = slstm_cell.input_term(x, w, cfg)  # (B, T, 4H): all steps in one product
    return slstm(term, w["weight_hh"], state=state, lengths=lengths, return_state=True,
                 forget=cfg.forget, stabilizer=cfg.stabilizer)


def mlstm_scan(cfg: mlstm_cell.mLSTMConfig, w: dict, x: torch.Tensor, state,
               lengths: torch.Tensor | None, form: str = "chunkwise", chunk_size: int = 64):
    """One mLSTM layer, batch-first: x (B, T, I) -> (h_t = o_t * h~_t (B, T, H), mLSTMState).
    :func:`lstmkit.cells.mlstm.cell_step` is the same, one step at a time."""
    q, k, v, i, f, o = mlstm_cell.split_input(mlstm_cell.input_term(x, w, cfg), cfg)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, T, NH, D) -> (B, NH, T, D)
    h, state = mlstm(q, k, v, i.transpose(1, 2), f.transpose(1, 2), form=form,
                     chunk_size=chunk_size, state=state, lengths=lengths, return_state=True,
                     eps=static(cfg, "eps"), forget=cfg.forget)
    return torch.sigmoid(o) * h.transpose(1, 2).flatten(2), state  # (B, T, H)


_SCANS = {"slstm": slstm_scan, "mlstm": mlstm_scan}


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
         lengths: torch.Tensor | None, masks: StepMasks):
    """One layer in one direction, time-major: x (T, B, I) -> (y (T, B, H), state). ``masks``
    are empty: the declaration has neither zoneout nor recurrent dropout."""
    if state is not None:
        state = type(state)(*(t.to(compute_dtype(x.dtype)) for t in state))
    y, final = _SCANS[family.key](cfg, w, x.transpose(0, 1), state, lengths)
    return y.transpose(0, 1), family.make_state(*(t.to(x.dtype) for t in final))


_HEADED = {"bias": (True, False), "num_heads": ANY, "forget": FORGET_GATES}

BACKEND = Backend(name="xlstm", declaration=Declaration(
    families={"slstm": {**_HEADED, "stabilizer": slstm_cell.STABILIZERS},
              "mlstm": {**_HEADED, "eps": ANY}},
    dtypes=(torch.float32, torch.float64, torch.bfloat16, torch.float16), devices=("cpu", "cuda"),
    features=frozenset({"lengths"})), scan=scan)
