"""The cpu backend's int8 inference scans (``quant.h``): int8 weight matrices with one float32
scale per output row; float32 state.

Each layer and direction is one call into ``quant_ops.h``'s op. :data:`BACKEND` quantises the
weights only: it computes, up to float32 rounding, the float scan of the dequantised weights
(``scale[:, None] * q``). A call of at most 4 rows in all (T * B: a step or two of a stream)
dots the int8 rows in place (a quarter of the float kernel's bytes, nothing packed); a larger
one dequantises each matrix once and runs the float kernel's products. :data:`INT8_ACTIVATIONS`
also rounds each product's left operand to int8 per row at run time and multiplies in integers
(``int8_dot.h``; :func:`lstmkit.layers.quantized.round_rows` is the rounding). Inference only:
no gradient, no recurrent-dropout mask; zoneout enters as its expectation (evaluation) and
lengths as in the float scans.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from lstmkit._transforms import through_ops
from lstmkit.cells.base import Family, state_tensors
from lstmkit.config import CellConfig
from lstmkit.kernels.contract import Backend, StepMasks
from lstmkit.kernels.cpu import DECLARATION as FLOAT_DECLARATION
from lstmkit.kernels.cpu import _build, _options, _zoneout

MATRICES = ("weight_ih", "weight_hh", "weight_hr")
"""The tensors stored as int8 (each with ``<name>_scale``); every other one stays float32."""

DECLARATION = dataclasses.replace(FLOAT_DECLARATION, dtypes=(torch.float32,))
"""The float kernel's families and options, in float32 (the activations' dtype)."""


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state, lengths,
         masks: StepMasks, *, int8_activations: bool = False, portable: bool = False):
    """One layer in one direction with int8 matrices ``w[name]`` and their ``w[name + "_scale"]``.

    ``int8_activations`` rounds every product's left operand to int8 as well (integer
    products); ``portable`` runs their portable loop instead of AVX2 (the tests compare them).

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    """
    if masks.hidden is not None:
        raise ValueError("int8 scan: expected no recurrent-dropout mask (inference only), got one")
    (int_names, ints), (real_names, reals) = _options(cfg)
    if int8_activations:
        int_names = ",".join(filter(None, (int_names, "int8_activations,portable")))
        ints = [*ints, 1, int(portable)]
    state = [t.contiguous() for t in state_tensors(state)]
    names = tuple(name for name, t in w.items() if t is not None)
    weights = [w[name].contiguous() for name in names]
    zoneout = [] if masks.zoneout is None else [_zoneout(z) for z in masks.zoneout]
    run = scan_op if through_ops() else _forward
    y, *final = run(family.key, x.contiguous(), state, ",".join(names), weights, lengths,
                    zoneout, int_names, ints, real_names, reals)
    return y, family.make_state(*final)


# The int8 scan as a torch.library custom operator, as kernels/cpu's float scans are: one opaque
# node per layer and direction under torch.compile and torch.export, its shapes from the fake
# kernel (symbolic in T and B). Inference only, so it has no autograd. Eager calls go straight to
# the C++ op, which takes the same arguments.
def _forward(family: str, x: torch.Tensor, state: list[torch.Tensor], names: str,
             weights: list[torch.Tensor], lengths: torch.Tensor | None,
             zoneout: list[torch.Tensor], int_names: str, ints: list[int], real_names: str,
             reals: list[float]) -> list[torch.Tensor]:
    """One layer and direction with int8 matrices: ``[y, *final_state]``."""
    return _build.ops().quant_scan_forward(family, x, state, names, weights, lengths, zoneout,
                                           int_names, ints, real_names, reals)


scan_op = torch.library.custom_op("lstmkit::cpu_quant_scan", mutates_args=())(_forward)


@scan_op.register_fake
def _(family, x, state, names, weights, lengths, zoneout, int_names, ints, real_names, reals):
    steps, batch = x.shape[:2]  # x (T, B, I)
    return [x.new_empty(steps, batch, state[0].shape[1]), *(s.new_empty(s.shape) for s in state)]


def isa() -> str:
    """Which integer product this CPU runs: "avx512_vnni", "avx2" or "portable"
    (``int8_dot.h``)."""
    return _build.ops().int8_dot_isa()


BACKEND = Backend(name="cpu", declaration=DECLARATION, scan=scan, auto_devices=("cpu",))
INT8_ACTIVATIONS = Backend(name="cpu", declaration=DECLARATION,
                           scan=functools.partial(scan, int8_activations=True),
                           auto_devices=("cpu",))
"""The scans with int8 activations too: every product in integers."""
