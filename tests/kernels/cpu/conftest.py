"""How the cpu kernels are compared with the reference, and where they cannot run.

The extension is built once per machine (seconds) and shared by every test here through the
loader's cache; a machine without a C++ compiler or ninja skips these tests, saying why.
"""

from __future__ import annotations

import pytest
import torch
from support import parts, probe_loss
from tolerances import assert_close

from lstmkit.kernels.cpu import _build


@pytest.fixture(autouse=True)
def _needs_a_build():
    reason = _build.problem()
    if reason is not None:
        pytest.skip(f"the cpu backend {reason}")


def run(layer, x, hx, lengths):
    """[y, state tensors..., gradients of x, hx and every parameter]. The step masks are drawn
    from the same seed on every call, so two backends draw the same ones."""
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in hx)
    torch.manual_seed(1)
    y, state = layer(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
    if not torch.is_grad_enabled():
        return [y, *parts(state)]
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *hx, *layer.parameters()],
                                allow_unused=True)
    return [y, *parts(state), *grads]


def names(layer, states: int) -> list[str]:
    return (["y", "h", "c"][:1 + states] + ["grad x"] + [f"grad hx[{k}]" for k in range(states)]
            + [f"grad {n}" for n, _ in layer.named_parameters()])


def compare_backends(make, dtype=torch.float64, steps=5, batch=3, lengths=None, training=True,
                     grad=True):
    """``make(backend)`` -> a layer. The cpu layer's outputs, final state and (with ``grad``)
    the gradients of a loss that weighs every element differently, with respect to the input,
    the initial state and every parameter, must match the reference's within the table's
    tolerance for ``dtype``."""
    torch.manual_seed(0)
    reference = make("reference").to(dtype).train(training)
    layer = make("cpu").to(dtype).train(training)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(steps, batch, reference.input_size, dtype=dtype)
    if reference.batch_first:
        x = x.transpose(0, 1)
    hx = tuple(torch.randn_like(h) for h in parts(reference.init_state(batch)))
    with torch.set_grad_enabled(grad):
        expected = run(reference, x, hx, lengths)
        actual = run(layer, x, hx, lengths)
    assert layer.backend().name == "cpu"
    for name, a, e in zip(names(reference, len(hx)), actual, expected):
        assert_close(a, e, dtype, msg=name)


@pytest.fixture
def compare():
    return compare_backends
