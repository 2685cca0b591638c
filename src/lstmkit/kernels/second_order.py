"""Second derivatives through the fused backends (grad of grad).

A fused kernel's backward is hand-written: its gradients are computed, not recorded, so they
carry no graph. Asked for one (``torch.autograd.grad(..., create_graph=True)``, as gradient
penalties, Hessian-vector products and meta-learning ask), a fused autograd Function hands its
backward to :func:`graph_gradients`: the same outputs recomputed from the same inputs by plain
PyTorch ops (the reference's equations), differentiated by autograd with a graph. The first
derivative is then the reference's, which the fused one equals to rounding (the conformance
table), and the second derivative is autograd's of the reference; the first-order path
(``create_graph=False``) is untouched and costs nothing more.

Without it, a hand-written backward under ``create_graph=True`` returns gradients that depend on
nothing: a gradient penalty that silently trains nothing (``once_differentiable`` catches this
only when the incoming gradients themselves carry a graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lstmkit.cells.base import state_tensors


def wants_graph() -> bool:
    """Whether the backward running now must record its gradients (``create_graph=True``:
    autograd runs a backward with grad mode on exactly then)."""
    return torch.is_grad_enabled()


def graph_gradients(forward: Callable, inputs: Sequence[torch.Tensor | None],
                    needs: Sequence[bool], grads: Sequence[torch.Tensor | None]) -> list:
    """The gradients of ``inputs`` (None where ``needs`` is False or the input is unused),
    given ``grads`` of the outputs, as a differentiable graph: ``forward(*inputs)`` (plain
    PyTorch ops returning the fused Function's outputs, in order) recomputed and differentiated
    by autograd with ``create_graph=True``."""
    with torch.enable_grad():
        outputs = forward(*inputs)
    pairs = [(out, grad) for out, grad in zip(outputs, grads)
             if grad is not None and out.requires_grad]
    wanted = [t for t, need in zip(inputs, needs) if need]
    found = iter(torch.autograd.grad([out for out, _ in pairs], wanted,
                                     [grad for _, grad in pairs], create_graph=True,
                                     allow_unused=True) if pairs and wanted else ())
    return [next(found, None) if need else None for need in needs]


def scan_outputs(scan: Callable, family, cfg, names: Sequence[str], states: int, lengths,
                 masks) -> Callable:
    """``(first, *state, *weights) -> (y, *final state)``: a scan Function's forward by
    ``scan`` (the reference's ``scan`` from x, or its ``recurrence`` from the input term), the
    weights by ``names`` (None entries absent), for :func:`graph_gradients`."""

    def run(first, *tensors):
        weights = {name: t for name, t in zip(names, tensors[states:]) if t is not None}
        y, final = scan(family, cfg, weights, first, family.make_state(*tensors[:states]),
                        lengths, masks)
        return (y, *state_tensors(final))

    return run
