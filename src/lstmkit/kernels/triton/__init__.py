"""The Triton backend: fused recurrence kernels for the LSTM family and the GRU on CUDA GPUs.

Each layer's input term is one matrix product in torch; Triton kernels run the recurrence,
forward and backward (:mod:`.lstm`, :mod:`.gru`), and the weight gradients are again whole-sequence
products in torch. Small layers run as one persistent program per batch tile that loops over
time with the recurrent weights held in registers; larger ones split the hidden units over
programs that meet at a grid barrier each step, or fall back to one launch per step.

Triton is imported on first use. "auto" picks this backend only on CUDA devices; on the CPU it
runs, slowly, under Triton's interpreter (``TRITON_INTERPRET=1``, set before the first run) when
named explicitly, which is how the tests check it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

from lstmkit.config import LayerConfig
from lstmkit.kernels import Backend
from lstmkit.layers.stack import stack_of

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_SINGLE = 256
"""Largest H whose step runs in one program per batch tile (layer norm, projection, the GRU's
reset-before form): that program holds whole rows of the step in registers, which spill beyond
this (ptxas, sm_90: about 1 KB per thread at H=256, 40 KB at H=768)."""


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET``, read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")


def supports(config: LayerConfig, device: torch.device, dtype: torch.dtype,
             training: bool) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'lstmkit[triton]')"
    cell = config.cell
    if cell.mode not in ("lstm", "gru"):
        return f"no Triton kernel for mode {cell.mode!r} (LSTM and GRU only)"
    if device.type != "cuda" and not interpreting():
        return (f"Triton runs on CUDA devices, got {device.type} (on the CPU only under "
                "TRITON_INTERPRET=1, for testing)")
    if dtype not in _DTYPES:
        return f"dtype {dtype} (float16, bfloat16, float32 and float64 only)"
    single = cell.layer_norm or cell.proj_size or not cell.reset_after
    if single and cell.hidden_size > _MAX_SINGLE:
        return (f"layer_norm, proj_size and reset_after=False run in one program per batch "
                f"tile: hidden_size <= {_MAX_SINGLE}, got {cell.hidden_size}")
    return None


def _scan(cfg, w, x, state, lengths, masks):
    kernels = importlib.import_module(f"{__name__}.{cfg.mode}")
    return kernels.scan(cfg, w, x, state, lengths, masks)


BACKEND = Backend(name="triton", run=stack_of(_scan), supports=supports, auto_devices=("cuda",))
