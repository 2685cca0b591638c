"""16-bit inputs with float32 state and arithmetic.

bfloat16 and float16 carry too few bits for the recurrences: an exponential gate in float16
overflows past 11, and a cell state summed over hundreds of steps in bfloat16 (8 bits of
mantissa) loses its small increments. So the scans take 16-bit inputs, compute and keep their
state in float32, and round only the outputs back to the inputs' dtype; gradients flow back
through the casts in the same way. float32 and float64 inputs compute in their own dtype.
"""

from __future__ import annotations

import torch

from lstmkit._autocast import SIXTEEN_BIT


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the scans compute and keep state in for inputs of ``dtype``."""
    return torch.float32 if dtype in SIXTEEN_BIT else dtype


def state_like(like: torch.Tensor) -> torch.Tensor:
    """A tensor of the dtype and device of the state for inputs like ``like``: ``like`` itself,
    or an empty float32 one for 16-bit inputs."""
    dtype = compute_dtype(like.dtype)
    return like if dtype == like.dtype else like.new_empty(0, dtype=dtype)


def check_state_dtype(name: str, state, dtype: torch.dtype) -> None:
    """Every tensor of a state passed in must be in the compute dtype of the inputs."""
    want = compute_dtype(dtype)
    for field, t in zip(state._fields, state):
        if t.dtype != want:
            extra = f" (the state of {dtype} inputs is float32)" if dtype in SIXTEEN_BIT else ""
            raise TypeError(f"{name}.{field}: expected {want}{extra}, got {t.dtype}")
