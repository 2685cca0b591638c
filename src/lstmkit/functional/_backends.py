"""Which implementation a functional form runs: torch's or the Triton kernels."""

from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("auto", "torch", "triton")
"""``"auto"``: the Triton kernels for CUDA tensors where Triton is installed, else torch;
``"torch"``: plain PyTorch anywhere; ``"triton"``: the Triton kernels (on the CPU only under
``TRITON_INTERPRET=1``, for testing)."""
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def use_triton(backend: str, like: torch.Tensor, refuse: str | None = None) -> bool:
    """Whether ``backend`` runs the Triton kernels for inputs like ``like``; raises ValueError
    for an unknown name, or for "triton" where it cannot run, with the reason. ``refuse``: why
    the kernels do not compute this call (a size), or None; "auto" then takes torch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if backend == "auto":
        return (like.device.type == "cuda" and like.dtype in TRITON_DTYPES and refuse is None
                and importlib.util.find_spec("triton") is not None)
    if refuse is not None:
        raise ValueError(f"backend='triton': {refuse}")
    from lstmkit.kernels.triton import DECLARATION

    if reason := DECLARATION.available(like.device):
        raise ValueError(f"backend='triton': {reason}")
    if like.dtype not in TRITON_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in TRITON_DTYPES)
        raise ValueError(f"backend='triton': expected one of {names}, "
                         f"got {str(like.dtype).replace('torch.', '')}")
    return True
