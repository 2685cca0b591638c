"""Training in 16 bits: ``--precision bf16`` or ``fp16`` on every application (the trainer).

The model keeps its float32 parameters: they are the master weights the optimizer updates,
checkpoints store and early stopping keeps. Each forward pass runs a 16-bit copy of them
(:class:`SixteenBit`): the parameters and the floating-point inputs are rounded to the 16-bit
dtype, the whole network runs in it (the recurrent layers on a backend that declares it: see
docs/equations.md, "16-bit arithmetic"), and the outputs come back as float32, so every loss and
metric is computed in float32. The rounding is differentiable: each gradient reaches its float32
parameter as the 16-bit one the backward pass computed, and the optimizer's step, its moments
and the gradient clipping stay float32.

float16's narrow range needs loss scaling: :func:`scaler` is torch's dynamic ``GradScaler``
(the loss times 2^16 at first, halved after any step whose gradients overflow, that step
skipped, doubled after 2000 clean steps); bfloat16 has float32's range and needs none.
"""

from __future__ import annotations

import torch
from torch import nn

from lstmkit._autocast import cast

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``--precision`` -> the dtype the network runs in."""


class SixteenBit(nn.Module):
    """``module`` run in ``dtype`` on 16-bit copies of its float32 parameters (see the module
    docstring); its other attributes and methods are the module's own."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype: expected bfloat16 or float16, got {dtype}")
        self.module, self.dtype = module, dtype

    def forward(self, *args, **kwargs):
        weights = {name: p.to(self.dtype) for name, p in self.module.named_parameters()
                   if p.is_floating_point()}
        out = torch.func.functional_call(self.module, weights, cast(args, self.dtype),
                                         cast(kwargs, self.dtype))
        return cast(out, torch.float32)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)


def wrap(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself for ``fp32``, else run through :class:`SixteenBit`."""
    if precision not in DTYPES:
        raise ValueError(f"precision: expected one of {tuple(DTYPES)}, got {precision!r}")
    return model if precision == "fp32" else SixteenBit(model, DTYPES[precision])


def scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling for ``fp16``; for other precisions a disabled scaler (its calls are
    the plain ``backward`` and ``step``)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
