"""How close two computations of the same recurrence must be, one row per dtype.

Every comparison of a backend, cell or exporter with another one uses this table, so the core's
tests and the kernels' tests hold the same bounds. float64 is tight enough to catch a wrong
equation at any step; float32 allows for a different summation order over a few dozen steps.
"""

from __future__ import annotations

import torch

TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 1e-3, "atol": 1e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}
"""dtype -> keyword arguments of ``torch.testing.assert_close``."""


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """The row of :data:`TOLERANCES` for ``dtype``."""
    return TOLERANCES[dtype]


def assert_close(actual, expected, dtype: torch.dtype | None = None, msg: str | None = None):
    """``torch.testing.assert_close`` at the tolerance of ``dtype`` (default: ``expected``'s).

    Both None passes: a parameter that gets no gradient on either side.
    """
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{msg}: one side is None"
        return
    dtype = dtype or expected.dtype
    torch.testing.assert_close(actual, expected, **tolerance(dtype), msg=msg)
