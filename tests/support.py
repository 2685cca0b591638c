"""Helpers shared by the core's tests: a loss that weighs every output element differently, and
gradients by name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from tolerances import assert_close


def probe_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar that depends on every element of every tensor differently.

    Fixed random weights (seeded by the tensor's shape and drawn in float64, so both sides of a
    comparison get the same ones in any dtype) plus a square term, so that a gradient wrong in
    one element or one step shows.
    """
    total = 0.0
    for t in tensors:
        generator = torch.Generator().manual_seed(1000 + t.numel())
        weight = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t)
        total = total + (weight * t).sum() + 0.5 * (t * t).sum()
    return total


def gradients(loss: torch.Tensor, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Name -> gradient of ``loss`` (None where it does not depend on the tensor)."""
    values = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
    return dict(zip(named, values))


def assert_same_gradients(actual: dict, expected: dict, dtype: torch.dtype) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(actual[name], expected[name], dtype, msg=f"gradient of {name}")


def parts(state) -> tuple[torch.Tensor, ...]:
    """The tensors of a state: (h, c) for an LSTM, (h,) for a GRU or RNN, every block's for an
    xLSTM block stack."""
    return tuple(torch.utils._pytree.tree_leaves(state))


def cpu_scan_args(layer, steps: int, batch: int, save: bool = True) -> tuple:
    """A call of lstmkit::cpu_scan as the cpu backend makes it for ``layer``'s first layer and
    direction: random x and state in the layer's dtype, and copies of its weights, all leaves
    that need a gradient."""
    from lstmkit.kernels import cpu

    dtype = next(layer.parameters()).dtype
    weights = layer.cell_weights()[0][0]
    names = [n for n, t in weights.items() if t is not None]
    (int_names, ints), (real_names, reals) = cpu._options(layer.config.cell)
    state = [torch.randn(batch, s[-1]).to(dtype).requires_grad_()
             for s in layer.family.state_shapes(layer.config.cell)]
    x = torch.randn(steps, batch, layer.input_size).to(dtype).requires_grad_()
    return (layer.family.key, x, state, ",".join(names),
            [weights[n].detach().clone().requires_grad_() for n in names], None, None, [],
            int_names, ints, real_names, reals, save)


def cpu_flags() -> set[str]:
    """The CPU's flags in /proc/cpuinfo; skips the calling test where there are none to read."""
    try:
        with open("/proc/cpuinfo") as info:
            line = next(line for line in info if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags to compare with on this system")
    return set(line.split(":", 1)[1].split())


def python_output(code: str, timeout: float = 120, env: dict | None = None) -> str:
    """What ``code`` prints, run in a fresh interpreter on this one's import path; a non-zero
    exit fails with the interpreter's stderr. ``env``: variables to set on top of this
    process's environment (default: a clean environment, the import path alone)."""
    base = {} if env is None else {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env={**base, "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
