"""One step of a plain LSTM layer in compiled code, for one stream or a few: ``step.h``.

At batch 1 a step is one matrix-vector product and a little gate math, so what it costs is the
calls around it and, at large H, the weight bytes it reads. Here each layer is one call into C++
on weights packed once in panels (:func:`pack`), in float32 or in float16, which halves the bytes
(the state and every sum stay float32). float16 rounds each weight to 11 significant bits: a
relative error of at most 2^-11 per weight (:data:`WEIGHT_ERROR`), which moves each gate's
pre-activation by at most 2^-11 * sum_k |w_k x_k| (plus 2^-25 * sum_k |x_k| for weights below
float16's smallest normal, 6.1e-5), tests/kernels/cpu/test_step.py bounds the whole step by
that against float64, and docs/benchmarks.md states what it measured.

int8 weights (:func:`pack_int8`, from dynamic quantisation's matrices: int8 rows with one scale
per output row of W_ih and of W_hh) read a quarter of float32's bytes; the step then computes
the float step of the dequantised weights, to float32 rounding.

The layers (``layer.step`` in inference, an int8 layer's too) and the runtime's
:class:`~lstmkit.runtime.Stepper` (``precision="float32"``, ``"float16"`` or ``"int8"``) call it.

Legend: B rows (streams), I input, H hidden, K = I + H, NP = ceil(4H / 64) panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lstmkit.config import LayerConfig
from lstmkit.kernels.cpu import _build

PANEL = 64
"""Gate rows per panel of packed weights (``kStepPanel`` in step.h)."""
PRECISIONS = {"float32": torch.float32, "float16": torch.float16}
"""Weight precision name -> the packed tensor's dtype."""
WEIGHT_ERROR = {"float32": 2.0 ** -24, "float16": 2.0 ** -11}
"""The largest relative error of rounding a normal weight to each precision (unit roundoff)."""
_HALF_MAX = 65504.0


def covers(config: LayerConfig) -> str | None:
    """Why the fused step does not compute ``config`` (or None): it computes the plain LSTM,
    unidirectional, without projection, recurrent dropout or zoneout."""
    cell = config.cell
    if cell.family != "lstm" or not config.is_torch_compatible:
        return "computes the plain LSTM only (no variant option, recurrent dropout or zoneout)"
    if cell.proj_size:
        return "has no projection"
    if config.bidirectional:
        return "steps one direction"
    return _build.problem()


@dataclass(frozen=True)
class StepWeights:
    """One layer's weights as step.h reads them."""

    packed: torch.Tensor
    """(NP, K, 64) float32 or float16: panel p holds gate rows 64p.. of [W_ih | W_hh],
    transposed, zero past 4H."""
    bias: torch.Tensor
    """(4H,) float32: b_ih + b_hh."""
    scale: torch.Tensor = torch.empty(0)
    """(2, NP * 64) float32 for int8 weights: the row scales of W_ih, then of W_hh, zero past
    4H; empty for float weights."""

    @property
    def precision(self) -> str:
        return {torch.float16: "float16", torch.int8: "int8"}.get(self.packed.dtype, "float32")


def pack(weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
         bias_hh: torch.Tensor | None = None, precision: str = "float32") -> StepWeights:
    """Pack one plain LSTM layer (torch's gate order i, f, g, o; any float dtype).

    Shape: weight_ih (4H, I), weight_hh (4H, H), biases (4H,) or None.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    with torch.no_grad():
        gates, hidden = weight_hh.shape
        weight = torch.cat([weight_ih, weight_hh], dim=1).detach().cpu()  # (4H, K)
        if precision == "float16" and float(weight.abs().max()) > _HALF_MAX:
            raise ValueError(f"weights: expected |w| <= {_HALF_MAX:g} for float16, got "
                             f"{float(weight.abs().max()):g}")
        packed = _panels(weight).to(PRECISIONS[precision]).contiguous()
    return StepWeights(packed, _bias(gates, bias_ih, bias_hh))


def pack_int8(q_ih: torch.Tensor, scale_ih: torch.Tensor, q_hh: torch.Tensor,
              scale_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
              bias_hh: torch.Tensor | None = None) -> StepWeights:
    """Pack one plain LSTM layer with int8 matrices, W = scale[:, None] * q for each (as
    :func:`lstmkit.layers.quantized.quantize_weight` makes them).

    Shape: q_ih (4H, I), q_hh (4H, H) int8; scale_ih, scale_hh (4H,); biases (4H,) or None.
    """
    if q_ih.dtype != torch.int8 or q_hh.dtype != torch.int8:
        raise ValueError(f"q_ih, q_hh: expected int8, got {q_ih.dtype} and {q_hh.dtype}")
    with torch.no_grad():
        gates = q_hh.shape[0]
        packed = _panels(torch.cat([q_ih, q_hh], dim=1).detach().cpu()).contiguous()
        scale = torch.zeros(2, packed.shape[0] * PANEL)
        scale[0, :gates], scale[1, :gates] = scale_ih.detach().cpu(), scale_hh.detach().cpu()
    return StepWeights(packed, _bias(gates, bias_ih, bias_hh), scale)


def _panels(weight: torch.Tensor) -> torch.Tensor:
    """(4H, K) -> (NP, K, 64): gate rows in panels of 64, transposed, zero past 4H."""
    panels = -(-weight.shape[0] // PANEL)
    padded = weight.new_zeros(panels * PANEL, weight.shape[1])
    padded[:weight.shape[0]] = weight
    return padded.view(panels, PANEL, -1).transpose(1, 2)


def _bias(gates: int, *biases: torch.Tensor | None) -> torch.Tensor:
    """The sum of the biases (None: absent), added in float64, as float32 (4H,)."""
    bias = torch.zeros(gates, dtype=torch.float64)
    for b in biases:
        if b is not None:
            bias += b.detach().cpu().double()
    return bias.float()


def lstm_step(layers: Sequence[StepWeights], x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              head: tuple[torch.Tensor, torch.Tensor | None] | None = None,
              portable: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of a stack of packed plain layers: ``(y, h_new, c_new)``, y the last layer's
    h, or ``head = (weight (O, H), bias (O) or None)`` applied to it. ``portable`` runs the
    loop a CPU without AVX2, FMA or F16C runs (for tests).

    Shape: x (B, I); h, c (L, B, H); y (B, H) or (B, O); or unbatched x (I,), h, c (L, H),
    y (H,) or (O,).
    """
    weight, bias = head if head is not None else (None, None)
    return _build.ops().lstm_step(*_arrays(layers), x, h, c, weight, bias, portable)


def lstm_step_(layers: Sequence[StepWeights], x: torch.Tensor, h: torch.Tensor,
               c: torch.Tensor, h_out: torch.Tensor, c_out: torch.Tensor,
               portable: bool = False) -> None:
    """:func:`lstm_step` in place: writes h_out and c_out, which may be h and c themselves
    (all contiguous)."""
    _build.ops().lstm_step_(*_arrays(layers), x, h, c, h_out, c_out, portable)


def _arrays(layers: Sequence[StepWeights]) -> tuple[list, list, list]:
    return [w.packed for w in layers], [w.bias for w in layers], [w.scale for w in layers]


def isa() -> str:
    """The product this CPU runs for every weight type: "avx2" (AVX2, FMA and F16C) or
    "portable"."""
    return _build.ops().lstm_step_isa()
