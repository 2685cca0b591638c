"""Run a layer on the Triton backend and on the reference, and compare everything."""

from __future__ import annotations

import pytest
import torch

from tests.tolerances import TOLERANCES

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit.cells.base import state_tensors  # noqa: E402
from lstmkit.kernels.triton import interpreting  # noqa: E402


def skip_unsupported(dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and interpreting():
        pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has no "
                    "bfloat16); bfloat16 is checked on the GPU by benchmarks/triton_gpu.py")


def _loss(y, state):
    """Weights every output differently and reaches the final state through non-linear terms."""
    w = torch.linspace(-1.0, 1.0, y.numel(), device=y.device).reshape(y.shape)
    loss = (y.float() * w).sum() + (y.float() ** 2).sum()
    for k, s in enumerate(state_tensors(state)):
        loss = loss + (s.float().sin() * (k + 1)).sum()
    return loss


def run(layer, x, hx, lengths, seed=1):
    """Outputs, final state and the gradients of every input and parameter, masks drawn from
    ``seed`` (so two backends draw the same recurrent-dropout and zoneout masks)."""
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in hx)
    torch.manual_seed(seed)
    y, state = layer(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
    inputs = [x, *hx, *layer.parameters()]
    grads = torch.autograd.grad(_loss(y, state), inputs)
    return [y, *state_tensors(state), *grads]


def compare(make, dtype, device, steps=4, batch=3, lengths=None, training=True, seed=0):
    """``make(backend)`` -> a layer; the Triton one must match the reference in ``dtype``."""
    skip_unsupported(dtype)
    torch.manual_seed(seed)
    reference = make("reference").to(device, dtype).train(training)
    triton_layer = make("triton").to(device, dtype).train(training)
    triton_layer.load_state_dict(reference.state_dict())
    x = torch.randn(steps, batch, reference.input_size, device=device, dtype=dtype)
    hx = tuple(torch.randn_like(h) for h in state_tensors(reference.init_state(batch)))
    expected = run(reference, x, hx, lengths)
    actual = run(triton_layer, x, hx, lengths)
    rtol, atol = TOLERANCES[dtype]
    names = ["y", "h", "c"][:1 + len(hx)] + ["grad x"] + [f"grad hx{k}" for k in range(len(hx))] \
        + [f"grad {n}" for n, _ in reference.named_parameters()]
    for name, a, e in zip(names, actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
