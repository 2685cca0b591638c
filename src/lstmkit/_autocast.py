"""The layers under ``torch.autocast``: a float32 layer computes in the autocast dtype.

Under ``torch.autocast(device_type, dtype)`` with bfloat16 or float16, a layer whose parameters
are float32 on that device type runs as the same layer in that dtype does (docs/equations.md,
"16-bit arithmetic": on the cpu backend 16-bit weights, inputs and products, float32 state and
sums). Its parameters, its floating-point inputs and its initial state are cast to the dtype;
the casts are differentiable, so each gradient reaches its float32 parameter as autocast's own
casts of a Linear's weight do. The backend is chosen for the dtype ("auto" takes the cpu backend
on a CPU), autocast is off inside (the backends' float32 arithmetic is not rounded again), and
the output and final state come back in the dtype, as torch.nn's recurrent layers' do under
autocast on a GPU.

Without this a float32 layer refused the 16-bit activations that autocast's Linear or Embedding
hands it ("expected dtype float32"); torch.nn.LSTM itself, under CPU autocast and given a
float32 input, fails on an AVX2 machine (oneDNN creates no primitive for the mix). Layers of
another dtype (float64, or already 16-bit) are left alone, as autocast leaves float64; int8
layers compute in float32 and return float32.
"""

from __future__ import annotations

import functools

import torch

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
"""The 16-bit dtypes: autocast's, and those the scans and kernels take with float32 state and
arithmetic (functional/_precision.py, kernels/reference.py, kernels/cpu). Defined once, here."""


def dtype(like: torch.Tensor) -> torch.dtype | None:
    """The dtype a layer whose parameters are like ``like`` computes in now: the autocast dtype
    where autocast is on for ``like``'s device type, ``like`` is float32 and the autocast dtype
    is 16-bit; else None (the layer's own dtype)."""
    device = like.device.type
    if like.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return None
    wanted = torch.get_autocast_dtype(device)
    return wanted if wanted in SIXTEEN_BIT else None


def cast(value, dtype: torch.dtype):
    """``value`` with every floating-point tensor in it (nested in tuples, NamedTuples such as
    LSTMState or PackedSequence, lists and dicts) converted to ``dtype``, but float64 (which
    autocast leaves too, so that the layer's dtype check names it); others as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != torch.float64 \
            else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(cast(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: cast(v, dtype) for k, v in value.items()}
    return value


def off(like: torch.Tensor):
    """A context with autocast off on ``like``'s device type."""
    return torch.autocast(like.device.type, enabled=False)


def accepted(value, like: torch.Tensor) -> torch.Tensor:
    """What ``value``'s dtype and device are checked against: ``like``, or under autocast, for a
    value already in the autocast dtype (a float32 layer's input there), an empty tensor in it."""
    low = dtype(like)
    if low is not None and isinstance(value, torch.Tensor) and value.dtype == low:
        return like.new_empty(0, dtype=low)
    return like


def own_precision(fn):
    """``fn``, whose first argument is a tensor, with autocast off on that tensor's device type:
    a function that fixes its own precision (lstmkit.functional's: 16-bit inputs computed in
    float32) keeps it inside an autocast region rather than have its products rounded."""

    @functools.wraps(fn)
    def run(first, *args, **kwargs):
        if isinstance(first, torch.Tensor) and torch.is_autocast_enabled(first.device.type):
            with torch.autocast(first.device.type, enabled=False):
                return fn(first, *args, **kwargs)
        return fn(first, *args, **kwargs)

    return run
