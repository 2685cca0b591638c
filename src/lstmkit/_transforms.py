"""torch.func transforms (vmap, grad, jacrev...) over the backends' custom operators.

A fused kernel is opaque to functorch: eager calls (an autograd Function without
``setup_context``, or torch's own op, which has no batching rule) refuse a transform. Under one,
the backends call their torch.library operators instead (as under torch.compile), whose
registered autograd composes with ``grad``, and whose vmap rule below runs the kernel once per
vmapped index and stacks the results: exact for any in_dims, weights included (an ensemble over
stacked parameters), at the cost of one kernel call per index.
"""

from __future__ import annotations

import contextlib
import functools
import operator

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten


def constant_result(fn):
    """``torch.compiler.assume_constant_result(fn)`` without its import of torch._dynamo (and
    through it of Triton): 1.5 s that a module defining such a function would add to the first
    ``import`` of a layer, for users who never compile. The public decorator sets this one
    attribute (torch 2.13, torch/_dynamo/decorators.py), which dynamo reads while tracing;
    tests/kernels/test_compile.py fails if it ever stops doing so (tracing the backends'
    declarations breaks the graph)."""
    fn._dynamo_marked_constant = True
    return fn


@constant_result
def static(config, name: str):
    """``getattr(config, name)``, a constant of a traced graph rather than a symbol. Dynamo
    reads a float field of a layer's config as a symbolic float, and the first branch on it
    specialises it and restarts the analysis: the whole frame traced twice (and counted as
    two compiled frames). The configs are frozen, as the layers' other constants are."""
    return getattr(config, name)


def through_ops() -> bool:
    """Whether a backend must call its custom operator: under torch.compile or torch.export
    (an opaque node), or under a torch.func transform (functorch's rules)."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def differentiates_a_backward() -> bool:
    """Whether an active torch.func transform will differentiate through a backward or in
    forward mode: two or more of grad, vjp and jacrev nested (grad of grad), or any jvp or
    jacfwd (hessian is jacfwd of jacrev). The backends' operators have once-differentiable
    registered backwards and no forward-mode rule, and under these transforms a registered
    backward's result would not depend on the outer level's inputs (a second derivative of zero,
    silently), so the layers run the reference's plain ops instead, which functorch
    differentiates to any order (layers/stack.py). Never while compiling (dynamo would break
    the graph on the query; the compiled graph's backward is differentiated once)."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False
    from torch._functorch.pyfunctorch import TransformType, retrieve_all_functorch_interpreters

    kinds = [i.key() for i in retrieve_all_functorch_interpreters()]
    return TransformType.Jvp in kinds or kinds.count(TransformType.Grad) > 1


def _select(arg, dim, index: int):
    if dim is None:
        return arg
    if isinstance(arg, (list, tuple)):  # a list of tensors: one dim (or None) per element
        return [a if d is None else a.select(d, index) for a, d in zip(arg, dim)]
    return arg.select(dim, index)


def register_looped_vmap(op) -> None:
    """Give ``op`` (returning a list or tuple of tensors) a vmap rule that loops over the vmapped
    index."""

    def rule(info, in_dims, *args):
        runs = [op(*(_select(a, d, index) for a, d in zip(args, in_dims)))
                for index in range(info.batch_size)]
        out = [torch.stack(parts) for parts in zip(*runs)]
        if isinstance(runs[0], tuple):
            return tuple(out), (0,) * len(out)
        return out, [0] * len(out)

    torch.library.register_vmap(op, rule)


class _Counted:
    """The autograd context as a registered backward reads it: ``needs_input_grad`` per
    argument of the operator (the flat Function below sees one entry per leaf)."""

    def __init__(self, ctx, needs: tuple[bool, ...]):
        self._ctx, self.needs_input_grad = ctx, needs

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class _Differentiable(torch.autograd.Function):
    """A custom operator with its registered setup_context and backward, as a Function that
    functorch can transform: its arguments flattened (a Function tracks only tensors passed
    directly), and its vmap rule generated from the operators' own (the forward and backward
    call the operators, which have one)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(op, setup, backward, tree, *leaves):
        return tuple(op(*tree_unflatten(list(leaves), tree)))

    @staticmethod
    def setup_context(ctx, inputs, output):
        op, setup, backward, tree, *leaves = inputs
        ctx.lstmkit_rule = backward, tree
        setup(ctx, tuple(tree_unflatten(leaves, tree)), list(output))

    @staticmethod
    def backward(ctx, *grads):
        backward, tree = ctx.lstmkit_rule
        needs = tree_unflatten(list(ctx.needs_input_grad[4:]), tree)
        per_arg = [any(tree_flatten(n)[0]) for n in needs]
        with torch.no_grad():  # once differentiable, as the registered backwards are
            grads_in = backward(_Counted(ctx, tuple(per_arg)), list(grads))
        flat = []
        for arg, grad in zip(tree.children(), grads_in):  # one gradient entry per argument
            leaves = arg.num_leaves
            if isinstance(grad, (list, tuple)) and len(grad) == leaves:
                flat.extend(grad)
            else:
                flat.extend([grad] * leaves if leaves == 1 else [None] * leaves)
        return (None, None, None, None, *flat)


def transformable(op, setup_context, backward, backward_op):
    """``op`` (a custom operator with the ``setup_context``/``backward`` pair registered on it,
    whose backward calls ``backward_op``) made ready for torch.func: both operators get the
    looped vmap rule, and the returned callable (called as ``op``) goes through a Function
    functorch can differentiate while a transform is active. (torch.library's own autograd
    wrapper for operators with tensor lists has no ``setup_context``: functorch refuses it.)"""
    register_looped_vmap(op)
    register_looped_vmap(backward_op)

    def call(*args):
        if not torch._C._are_functorch_transforms_active():
            return op(*args)
        leaves, tree = tree_flatten(list(args))
        return list(_Differentiable.apply(op, setup_context, backward, tree, *leaves))

    return call


_AUTOGRAD = functools.reduce(operator.or_, (
    torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))
    for key in ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor")))


@contextlib.contextmanager
def recording():
    """Autograd inside a custom operator's kernel: a backward operator that recomputes its
    forward (plain torch ops) and differentiates it. An operator's kernel runs below autograd
    (its dispatch keys excluded); this brings them back, with grad mode on, for the block."""
    keys = torch._C._dispatch_tls_local_include_set(), torch._C._dispatch_tls_local_exclude_set()
    with torch._C._ForceDispatchKeyGuard(keys[0], keys[1] - _AUTOGRAD), torch.enable_grad():
        yield


def fresh(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy: what a fake kernel's ``new_empty`` promises (inductor checks the
    strides), and an operator's output may alias none of its inputs (a gradient can be one
    passed in)."""
    return t.clone(memory_format=torch.contiguous_format)


def recomputed_gradients(forward, inputs, grads) -> list[torch.Tensor]:
    """What a recomputing backward operator returns: the gradients with respect to ``inputs``
    of ``forward(*inputs)`` (its outputs, a sequence of tensors), given theirs (``grads``),
    recomputed in plain torch ops under :func:`recording`; fresh tensors, zeros where the
    outputs do not depend on an input."""
    leaves = [t.detach().requires_grad_() for t in inputs]
    with recording():
        got = torch.autograd.grad(list(forward(*leaves)), leaves, grads, allow_unused=True)
    return [torch.zeros_like(t, memory_format=torch.contiguous_format) if g is None
            else fresh(g) for g, t in zip(got, leaves)]
