"""The triton_xlstm backend: the sLSTM's and mLSTM's Triton kernels on the capability contract.

The kernels (:mod:`.slstm`: the recurrence, one persistent program per batch tile and head;
:mod:`.mlstm`: the chunkwise form) compute what the xlstm backend's torch scans compute
(:mod:`lstmkit.kernels.xlstm`), in float32 state and accumulation for 16-bit inputs. They take
no step masks, so the backend declares no zoneout and no recurrent dropout (the reference runs
those); stacking, direction and inter-layer dropout come from the layer.

Like the triton backend, it imports Triton on first use, "auto" picks it only on CUDA devices,
and on the CPU it runs, slowly, under Triton's interpreter (``TRITON_INTERPRET=1``) when named,
which is how the tests check it.
"""

from __future__ import annotations

import torch

from lstmkit._transforms import static
from lstmkit.cells import mlstm as mlstm_cell
from lstmkit.cells import slstm as slstm_cell
from lstmkit.cells._heads import FORGET_GATES
from lstmkit.cells.base import ANY, Family
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.functional._precision import compute_dtype
from lstmkit.kernels.contract import Backend, Declaration, StepMasks
from lstmkit.kernels.triton import DECLARATION as TRITON

MAX_HEAD = 256
"""Largest sLSTM head size DH: one program holds a head's four gate rows of DH units (as the
triton backend's one-program LSTM variants hold 256)."""
CHUNK = 64
"""Steps per chunk of the mLSTM's chunkwise form (the xlstm backend's)."""


def _slstm(cfg: slstm_cell.sLSTMConfig, w: dict, x: torch.Tensor, state, lengths):
    """One sLSTM layer, time-major: x (T, B, I) -> (h (T, B, H), sLSTMState)."""
    from lstmkit.kernels.triton import slstm

    term = slstm_cell.input_term(x, w, cfg)  # (T, B, 4H): all steps in one product
    return slstm.scan(term, w["weight_hh"], state, lengths, cfg.forget, cfg.stabilizer)


def _mlstm(cfg: mlstm_cell.mLSTMConfig, w: dict, x: torch.Tensor, state, lengths):
    """One mLSTM layer, time-major: x (T, B, I) -> (h_t = o_t * h~_t (T, B, H), mLSTMState)."""
    from lstmkit.functional.mlstm import mlstm

    q, k, v, i, f, o = mlstm_cell.split_input(mlstm_cell.input_term(x, w, cfg), cfg)
    q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # (T, B, NH, D) -> (B, NH, T, D)
    # lstmkit.functional keeps a 16-bit call's state in float32; a layer's is in its dtype.
    state = type(state)(*(t.to(compute_dtype(x.dtype)) for t in state))
    h, state = mlstm(q, k, v, i.permute(1, 2, 0), f.permute(1, 2, 0), chunk_size=CHUNK,
                     state=state, lengths=lengths, return_state=True, eps=static(cfg, "eps"),
                     forget=cfg.forget, backend="triton")
    state = type(state)(*(t.to(x.dtype) for t in state))
    return torch.sigmoid(o) * h.permute(2, 0, 1, 3).flatten(2), state  # (T, B, H)


_SCANS = {"slstm": _slstm, "mlstm": _mlstm}


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
         lengths: torch.Tensor | None, masks: StepMasks):
    """One layer in one direction, time-major: x (T, B, I) -> (y (T, B, H), state). ``masks``
    are empty: the declaration has neither zoneout nor recurrent dropout."""
    y, final = _SCANS[family.key](cfg, w, x, state, lengths)
    return y, family.make_state(*final)


def _limits(config: LayerConfig) -> str | None:
    cell = config.cell
    if cell.family == "slstm" and cell.head_size > MAX_HEAD:
        return (f"one program holds an sLSTM head's units: hidden_size / num_heads <= "
                f"{MAX_HEAD}, got {cell.head_size}")
    return None


_HEADED = {"bias": (True, False), "num_heads": ANY, "forget": FORGET_GATES}

BACKEND = Backend(name="triton_xlstm", declaration=Declaration(
    families={"slstm": {**_HEADED, "stabilizer": slstm_cell.STABILIZERS},
              "mlstm": {**_HEADED, "eps": ANY}},
    dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
    devices=("cuda", "cpu"),  # the CPU through the interpreter only (see TRITON.available)
    features=frozenset({"lengths"}), limits=_limits, available=TRITON.available),
    scan=scan, auto_devices=("cuda",))
