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

import importlib.util
import os

import torch

from lstmkit.cells.base import ANY
from lstmkit.config import LayerConfig
from lstmkit.kernels.contract import Backend, Declaration

KERNEL_ACTIVATIONS = ("sigmoid", "tanh", "relu", "hard_sigmoid", "softsign", "softplus", "elu",
                "leaky_relu", "identity")
"""The activations common.py's ``act`` implements (a new row of the table is refused until its
case is written there)."""
_MAX_SINGLE = 256
"""Largest H whose step runs in one program per batch tile (layer norm, projection, the GRU's
reset-before form): that program holds whole rows of the step in registers, which spill beyond
this (ptxas, sm_90: about 1 KB per thread at H=256, 40 KB at H=768)."""


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET``, read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")


def _available(device: torch.device) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'lstmkit[triton]')"
    if device.type != "cuda" and not interpreting():
        return (f"Triton runs on CUDA devices, got {device.type} (on the CPU only under "
                "TRITON_INTERPRET=1, for testing)")
    return None


_SINGLE = {"lstm": lambda cell: cell.layer_norm or cell.proj_size,
           "gru": lambda cell: not cell.reset_after}
"""Family key -> whether a config's step needs all hidden units in one program."""


def _limits(config: LayerConfig) -> str | None:
    cell = config.cell
    if _SINGLE[cell.family](cell) and cell.hidden_size > _MAX_SINGLE:
        return (f"layer_norm, proj_size and reset_after=False run in one program per batch "
                f"tile: hidden_size <= {_MAX_SINGLE}, got {cell.hidden_size}")
    return None


DECLARATION = Declaration(
    families={
        # The kernels fix no gate to 1: the ablations (Greff et al.'s NIG, NFG, NOG) are not
        # computed, so they are not declared.
        "lstm": {"bias": ANY, "proj_size": ANY, "peephole": ANY, "coupled": ANY,
                 "input_gate": (True,), "forget_gate": (True,), "output_gate": (True,),
                 "cell_clip": ANY, "gate_activation": KERNEL_ACTIVATIONS,
                 "cell_activation": KERNEL_ACTIVATIONS, "output_activation": KERNEL_ACTIVATIONS,
                 "layer_norm": ANY},
        "gru": {"bias": ANY, "reset_after": ANY},
    },
    dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
    devices=("cuda", "cpu"),  # the CPU through the interpreter only (see _available)
    features=frozenset({"lengths", "recurrent_dropout", "zoneout"}),  # and the layer's
    limits=_limits, available=_available)


def scan(family, cfg, w, x, state, lengths, masks):
    # Import statements, not importlib: torch.compile runs them while tracing (a call of
    # importlib.import_module breaks the graph).
    if family.key == "lstm":
        from lstmkit.kernels.triton import lstm as kernels
    else:
        from lstmkit.kernels.triton import gru as kernels
    return kernels.scan(cfg, w, x, state, lengths, masks)


BACKEND = Backend(name="triton", declaration=DECLARATION, scan=scan, auto_devices=("cuda",))
