"""Where the Triton kernels run in these tests, and how they are compared with the reference.

On a CUDA GPU the tests run the compiled kernels; without one, Triton's CPU interpreter. Triton
reads ``TRITON_INTERPRET`` when a kernel is decorated, that is when lstmkit's kernel modules are
first imported (on a layer's first run), so it is set here, at collection, before any test
runs. Other tests are unaffected: "auto" never picks the Triton backend on the CPU.
"""

from __future__ import annotations

import os

import pytest
import torch
from support import parts, probe_loss
from tolerances import assert_close, tolerance

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def skip_unsupported(dtype: torch.dtype) -> None:
    """bfloat16 arithmetic is wrong in Triton's interpreter: checked on a GPU only."""
    from lstmkit.kernels.triton import interpreting

    if dtype == torch.bfloat16 and interpreting():
        pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has no "
                    "bfloat16); bfloat16 is checked on a GPU (benchmarks/triton_gpu.py --tests)")


def _run(layer, x, hx, lengths):
    """[y, state tensors..., gradients of x, hx and every parameter]; the step masks are drawn
    from the same seed on every call, so two backends draw the same ones."""
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in hx)
    torch.manual_seed(1)
    y, state = layer(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *hx, *layer.parameters()])
    return [y, *parts(state), *grads]


def _names(layer, states: int) -> list[str]:
    return (["y", "h", "c"][:1 + states] + ["grad x"] + [f"grad hx[{k}]" for k in range(states)]
            + [f"grad {n}" for n, _ in layer.named_parameters()])


def compare_backends(make, dtype, device, steps=4, batch=3, lengths=None, training=True):
    """``make(backend)`` -> a layer. The Triton layer must match the reference: in float32 and
    float64 within the table's tolerance of the reference in the same dtype. In 16 bits the
    kernels keep c and the gates in float32 while the reference rounds every operation, so the
    two differ by the reference's own error: there the Triton layer must be within twice the
    16-bit reference's distance from the float64 reference, plus the table's atol."""
    skip_unsupported(dtype)
    torch.manual_seed(0)
    exact = torch.float64 if dtype in (torch.float16, torch.bfloat16) else dtype
    reference = make("reference").to(device, exact).train(training)
    layer = make("triton").to(device, dtype).train(training)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(steps, batch, reference.input_size, device=device, dtype=exact)
    hx = tuple(torch.randn_like(h) for h in parts(reference.init_state(batch)))
    expected = _run(reference, x, hx, lengths)
    actual = _run(layer, x.to(dtype), tuple(h.to(dtype) for h in hx), lengths)
    names = _names(reference, len(hx))
    if exact == dtype:
        for name, a, e in zip(names, actual, expected, strict=True):
            assert_close(a, e, dtype, msg=name)
        return
    low = make("reference").to(device, dtype).train(training)
    low.load_state_dict(reference.state_dict())
    baseline = _run(low, x.to(dtype), tuple(h.to(dtype) for h in hx), lengths)
    atol = tolerance(dtype)["atol"]
    for name, a, b, e in zip(names, actual, baseline, expected, strict=True):
        ours, theirs = (float((v.detach().double() - e.detach()).abs().max()) for v in (a, b))
        assert ours <= 2 * theirs + atol, (f"{name}: {ours:.2e} from the float64 reference, "
                                           f"the {dtype} reference {theirs:.2e}")


@pytest.fixture
def compare():
    return compare_backends
