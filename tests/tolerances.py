"""How close two computations of the same recurrence must be: every bound of the suite.

:data:`TOLERANCES` (one row per dtype) is for comparisons of two computations in the same dtype.
float64 is tight enough to catch a wrong equation at any step; float32 allows for a different
summation order over a few dozen steps.

The conformance table (tests/kernels/test_conformance.py) bounds every float32 result by its
distance to the float64 truth instead (:func:`conformance_bound`): a multiple of the float32
reference's own distance to the truth plus a floor scaled by the truth's magnitude and the
length of the reductions. Neither side is another float32 result whose rounding moves with
MKL's code path: the floor alone admits every correct kernel (it is far above float32 rounding
over a few steps), and the reference's term only widens it where the problem itself is
ill-conditioned.

The 16-bit rows (:data:`CONFORMANCE_16`) bound bfloat16 and float16 results the same way, by
their distance to the float64 truth on the same 16-bit weights and inputs: a multiple of the
16-bit baseline's distance (plain PyTorch op by op in that dtype, every intermediate rounded)
plus a floor of a few of the dtype's ulps, scaled by the truth's magnitude and by the number of
steps the rounding compounds over. In 16 bits the error is the rounding of the operands and
results, half an ulp each, not float32's slow growth along sums, and no result depends on
another float32 library's summation order by more than float32 does.
"""

from __future__ import annotations

import math

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


CONFORMANCE = {"multiple": 4.0, "floor_ulps": 64.0, "scale_floor": 1e-3}
"""The conformance bound's constants: |actual - truth| <= multiple * |reference - truth| +
floor_ulps * eps * max(max|truth|, scale_floor) * sqrt(reduction)."""


CONFORMANCE_16 = {"multiple": 2.0, "floor_ulps": 4.0, "scale_floor": 1e-3}
"""The 16-bit rows: |actual - truth| <= multiple * |baseline - truth| + floor_ulps * eps *
max(max|truth|, scale_floor) * sqrt(steps), with ``reduction`` the steps (T times layers). The
upcasting reference comes within about 1 ulp * sqrt(steps) of the truth; over the whole table
(bfloat16 and float16, every backend that declares them) the largest error uses 0.36 of its
bound, and a kernel with its input and forget gates swapped fails it in both dtypes."""
SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def conformance_bound(truth: torch.Tensor, reference: torch.Tensor | None, dtype: torch.dtype,
                      reduction: int) -> float:
    """The largest max-abs error allowed for a ``dtype`` result whose float64 truth is ``truth``.

    Args:
        truth: the float64 reference's result.
        reference: the ``dtype`` reference's result (None: the floor alone).
        dtype: the precision of the result being checked.
        reduction: the length of the longest sum behind an element (steps times the widths
            summed in one step); for a 16-bit dtype the steps alone (T times layers).
    """
    c = CONFORMANCE_16 if dtype in SIXTEEN_BIT else CONFORMANCE
    scale = max(float(truth.abs().max()) if truth.numel() else 0.0, c["scale_floor"])
    floor = c["floor_ulps"] * torch.finfo(dtype).eps * scale * math.sqrt(reduction)
    if reference is None:
        return floor
    return c["multiple"] * float((reference.double() - truth).abs().max()) + floor


def assert_conforms(actual, truth, reference, dtype: torch.dtype, reduction: int, msg: str):
    """``actual`` (``dtype``) is within :func:`conformance_bound` of the float64 ``truth``."""
    if actual is None or truth is None:
        assert actual is None and truth is None, f"{msg}: one side is None"
        return
    assert actual.shape == truth.shape, f"{msg}: shape {tuple(actual.shape)}, expected " \
                                        f"{tuple(truth.shape)}"
    error = float((actual.double() - truth).abs().max()) if truth.numel() else 0.0
    bound = conformance_bound(truth, reference, dtype, reduction)
    assert error <= bound, f"{msg}: max |error| {error:.3g} > bound {bound:.3g}"
