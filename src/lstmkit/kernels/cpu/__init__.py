"""The cpu backend: the whole recurrence in compiled C++, forward and backward.

Each layer and direction is one call into ``ops.cpp`` (built on first use, see ``_build``): the
input term as one matrix product per chunk of steps, one recurrent product per step, the gate
math in loops the compiler vectorises, spread over threads by batch rows where a step has
enough of them, and in the backward pass the weight gradients as products over all steps at
once. Products run oneDNN's brgemm ukernel on weights packed once per call (``matmul.h``). It
computes every cell option of the three families, lengths, recurrent dropout and zoneout, in
float32 and float64.

"auto" takes it first on the CPU (docs/benchmarks.md has the numbers): against torch.nn's
own kernels it trains the plain LSTM faster at every measured size, runs GRU and RNN several
times faster (torch has no oneDNN path for them) and is the only fused path for the variants.
For torch.nn's plain float32 LSTM in inference, where oneDNN is as fast, "auto" keeps the
native backend: same speed, torch's exact numbers and no build on first use.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from lstmkit.cells import FAMILIES
from lstmkit.cells.base import state_tensors
from lstmkit.cells.weights import CellWeights
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.kernels import Backend
from lstmkit.kernels.cpu import _build
from lstmkit.layers.stack import StepMasks, stack_of

ACTIVATION_CODES = ("sigmoid", "tanh", "relu", "hard_sigmoid", "softsign", "softplus", "elu",
                    "leaky_relu", "identity")
"""Activation names in the order of common.h's ``Act`` enum."""

_MODES = ("lstm", "gru", "rnn")  # ops.cpp's Mode enum
_DTYPES = (torch.float32, torch.float64)


class _Spec(NamedTuple):
    """A cell config as the C++ side reads it."""

    mode: int
    states: int  # state tensors: 2 for an LSTM, else 1
    weights: int  # leading CellWeights fields the family has
    options: tuple[int, ...]
    clip: float


@functools.lru_cache(maxsize=64)
def _spec(cfg: CellConfig) -> _Spec:
    if cfg.mode == "lstm":
        acts = (cfg.gate_activation, cfg.cell_activation, cfg.output_activation)
        flags = (cfg.coupled, cfg.input_gate, cfg.forget_gate, cfg.output_gate)
        options = tuple(ACTIVATION_CODES.index(a) for a in acts) + tuple(map(int, flags))
        return _Spec(0, 2, len(CellWeights._fields), options, float(cfg.cell_clip or 0.0))
    flag = cfg.reset_after if cfg.mode == "gru" else cfg.nonlinearity == "relu"
    return _Spec(_MODES.index(cfg.mode), 1, 4, (int(flag),), 0.0)


class _Scan(torch.autograd.Function):
    """One layer and direction; the masks ride along as constants (they need no gradient)."""

    @staticmethod
    def forward(ctx, spec: _Spec, masks: tuple, x, *tensors):
        state, weights = tensors[:spec.states], tensors[spec.states:]
        out = _build.ops().scan_forward(spec.mode, x, state, weights, *masks, spec.options,
                                        spec.clip, True)
        ctx.spec, ctx.masks = spec, masks
        ctx.save_for_backward(x, *weights, *out[1 + spec.states:])
        return tuple(out[:1 + spec.states])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        spec = ctx.spec
        x, *rest = ctx.saved_tensors
        weights, saved = rest[:spec.weights], rest[spec.weights:]
        out = _build.ops().scan_backward(spec.mode, x, [g.contiguous() for g in grads], saved,
                                         weights, *ctx.masks, spec.options, spec.clip,
                                         ctx.needs_input_grad[2])
        dweights = [g if w is not None else None for g, w in zip(out[1 + spec.states:], weights)]
        return (None, None, out[0], *out[1:1 + spec.states], *dweights)


def scan(cfg: CellConfig, w: CellWeights, x: torch.Tensor, state, lengths, masks: StepMasks):
    """One layer in one direction, as :func:`lstmkit.kernels.reference.scan` computes it.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    """
    spec = _spec(cfg)
    tensors = [t.contiguous() for t in state_tensors(state)]
    tensors += [None if t is None else t.contiguous() for t in w[:spec.weights]]
    zoneout = [] if masks.zoneout is None else [_zoneout(z) for z in masks.zoneout]
    constants = (lengths, masks.hidden, zoneout)
    x = x.contiguous()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in [x, *tensors]):
        y, *final = _Scan.apply(spec, constants, x, *tensors)
    else:
        y, *final = _build.ops().scan_forward(spec.mode, x, tensors[:spec.states],
                                              tensors[spec.states:], *constants, spec.options,
                                              spec.clip, False)
    return y, FAMILIES[cfg.mode].make_state(*final)


def _zoneout(z: torch.Tensor) -> torch.Tensor:
    """A zoneout weight (T, B, size) as the kernel reads it: evaluation's constant probability
    (an expanded scalar) as one row, rather than T * B copies of it."""
    if z.dim() == 3 and z.stride()[:2] == (0, 0):
        return z[0, 0].contiguous()
    return z.contiguous()


def supports(config: LayerConfig, device: torch.device, dtype: torch.dtype,
             training: bool) -> str | None:
    if device.type != "cpu":
        return f"runs on the CPU only, got device {device.type!r}"
    if dtype not in _DTYPES:
        return f"computes float32 and float64 only, got {dtype}"
    return _build.problem()


def auto_defers(config: LayerConfig, device: torch.device, dtype: torch.dtype,
                training: bool) -> str | None:
    # The drop-in promise comes first: where torch.nn computes the configuration, "auto" gives
    # torch's own numbers bit for bit. This kernel is faster in training there (0.6-0.9x of
    # torch's time, docs/benchmarks.md) but rounds differently; backend="cpu" asks for it.
    if config.is_torch_compatible:
        return ("torch.nn computes this configuration: native gives its exact numbers "
                "(backend='cpu' is faster in training)")
    return None


BACKEND = Backend(name="cpu", run=stack_of(scan), supports=supports, auto_devices=("cpu",),
                  auto_defers=auto_defers)
