"""The sLSTM over a whole sequence from its precomputed input terms.

Shapes (B batch, T time, NH heads, DH units per head, H = NH * DH)::

    x (B, T, 4H)  the input terms x~_t = W x_t + b, blocks i, f, z, o (each head-major)
    r (NH, DH, 4, DH)  the block-diagonal recurrent matrix: head k maps h[k] (DH) to its
                       4 DH gate pre-activations (NX-AI's external layout)
    -> h (B, T, H), state (h, c, n, m) each (B, H)

The step is :func:`lstmkit.cells.slstm.step` (equations and NX-AI's departures from the paper in
:mod:`lstmkit.cells.slstm`). This scan computes the same function with the heads as a batch of
small matrix products, (NH, B, DH) @ (NH, DH, 4 DH) per step, and the input terms laid out once
for all steps, so a step costs one batched product and the pointwise update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit import _autocast as autocast
from lstmkit._transforms import differentiates_a_backward, through_ops, transformable
from lstmkit.cells._heads import FORGET_GATES, log_forget
from lstmkit.cells.slstm import STABILIZERS, pointwise, sLSTMState
from lstmkit.functional._backends import use_triton
from lstmkit.functional._precision import check_state_dtype, compute_dtype
from lstmkit.kernels import second_order


@autocast.own_precision
def slstm(x: torch.Tensor, r: torch.Tensor, *, state=None, lengths: torch.Tensor | None = None,
          return_state: bool = False, forget: str = "sigmoid", stabilizer: str = "nxai",
          backend: str = "auto"):
    """The sLSTM over a sequence.

    Args:
        x: input terms (B, T, 4H).
        r: recurrent matrix (NH, DH, 4, DH).
        state: (h, c, n, m), each (B, H), to start from; zeros if None. In float32 for
            bfloat16 or float16 inputs, else in their dtype.
        lengths: optional (B,) integer lengths in 1..T: each sequence's state stops at its last
            step and its outputs past it are zero.
        return_state: also return the state after the last (valid) step.
        forget: "sigmoid" or "exp".
        stabilizer: "nxai" or "paper" (see :mod:`lstmkit.cells.slstm`).
        backend: "auto" (the Triton kernels of :mod:`lstmkit.kernels.triton.slstm` for CUDA
            tensors where Triton is installed, else torch), "torch" or "triton" (see
            :data:`lstmkit.functional._backends.BACKENDS`).

    Returns:
        h (B, T, H) in the inputs' dtype, or ``(h, sLSTMState)`` with ``return_state``.
        bfloat16 and float16 inputs are computed in float32 and their state is float32
        (:mod:`lstmkit.functional._precision`).

    Examples:
        >>> x, r = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 2, 4, 2).double()
        >>> h, s = slstm(x, r, return_state=True)
        >>> h2 = slstm(x[:, 3:], r, state=slstm(x[:, :3], r, return_state=True)[1])
        >>> torch.allclose(h[:, 3:], h2)
        True
    """
    NH, DH = _check(x, r, forget, stabilizer)
    B, T = x.shape[:2]
    H = NH * DH
    dtype = x.dtype
    x, r = x.to(compute_dtype(dtype)), r.to(compute_dtype(dtype))
    if state is None:
        state = sLSTMState(*x.new_zeros(4, B, H))
    elif not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError(f"state: expected a tuple (h, c, n, m), got {type(state).__name__}")
    for name, t in zip(sLSTMState._fields, state):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, H):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"state.{name}: expected shape ({B}, {H}), got {got}")
    check_state_dtype("state", sLSTMState(*state), dtype)
    higher = differentiates_a_backward()  # torch.func's grad of grad, jvp: plain ops (_loop)
    if use_triton(backend, x, _triton_refuses(DH)) and not higher:  # on x, r in compute dtype
        from lstmkit.kernels.triton.slstm import scan

        y, final = scan(x.transpose(0, 1), r, sLSTMState(*state), lengths, forget, stabilizer)
        y = y.transpose(0, 1).to(dtype)
        return (y, final) if return_state else y
    heads = [t.reshape(B, NH, DH).transpose(0, 1) for t in state]  # (NH, B, DH)
    xs = x.reshape(B, T, 4, NH, DH).permute(1, 3, 0, 2, 4).reshape(T, NH, B, 4 * DH)
    keep = None
    if lengths is not None:
        keep = (torch.arange(T)[:, None] < lengths.cpu()[None, :]).to(x.device)[:, None, :, None]
    weight = r.reshape(NH, DH, 4 * DH)
    if higher:
        hs, *final = _loop(xs, weight, *heads, keep, forget, stabilizer)
    elif through_ops():
        hs, *final = _scan_call(xs, weight, *heads, keep, forget, stabilizer)[:5]
    else:
        hs, *final = _Scan.apply(xs, weight, *heads, keep, forget, stabilizer)
    h = hs.permute(2, 0, 1, 3).reshape(B, T, H).to(dtype)  # (T, NH, B, DH) -> (B, T, H)
    if not return_state:
        return h
    return h, sLSTMState(*(t.transpose(0, 1).reshape(B, H) for t in final))


class _Scan(torch.autograd.Function):
    """The time loop with a hand-written backward through time.

    Autograd over the loop records some sixty nodes per step and spends about eight times the
    forward's time walking them back; this backward recomputes each step's gates from the saved
    pre-activations and states, and does the weight gradient as one product over all steps.
    It follows :func:`lstmkit.cells.slstm.pointwise` exactly, torch's tie rules for max and
    min included, and is tested against autograd through that step.

    Shapes: xs (T, NH, B, 4 DH) input terms, weight (NH, DH, 4 DH), states (NH, B, DH),
    keep (T, 1, B, 1) bool or None.
    """

    @staticmethod
    def forward(ctx, xs, weight, h, c, n, m, keep, forget, stabilizer):
        hs, *state, pres, H, C, N, M = _forward(xs, weight, h, c, n, m, keep, forget, stabilizer)
        ctx.save_for_backward(weight, pres, H, C, N, M, keep, xs, h, c, n, m)
        ctx.options = (forget, stabilizer)
        return hs, *state

    @staticmethod
    def backward(ctx, d_hs, *d_final):
        weight, pres, H, C, N, M, keep, *inputs = ctx.saved_tensors
        if second_order.wants_graph():  # the time loop again, with a graph: grad of grad
            xs, *heads = inputs
            return (*second_order.graph_gradients(
                lambda xs, weight, *heads: _loop(xs, weight, *heads, keep, *ctx.options),
                [xs, weight, *heads], ctx.needs_input_grad[:6], [d_hs, *d_final]), None, None,
                None)
        d_final = [torch.zeros_like(H[0]) if d is None else d for d in d_final]
        grads = _backward(weight, pres, H, C, N, M, keep, *ctx.options, d_hs, *d_final)
        return (*grads, None, None, None)


def _forward(xs, weight, h, c, n, m, keep, forget: str, stabilizer: str):
    """The time loop: (hs, h, c, n, m at the end, then what the backward reads: the
    pre-activations and the states H, C, N, M at steps 0..T)."""
    T = xs.shape[0]
    pres, states = torch.empty_like(xs), [torch.empty((T + 1, *h.shape), dtype=h.dtype,
                                                      device=h.device) for _ in range(4)]
    for part, t0 in zip(states, (h, c, n, m)):
        part[0] = t0
    state = sLSTMState(h, c, n, m)
    for t in range(T):
        pres[t] = torch.baddbmm(xs[t], state.h, weight)
        new = pointwise(*pres[t].chunk(4, -1), state, forget=forget, stabilizer=stabilizer)
        if keep is not None:
            new = sLSTMState(*(torch.where(keep[t], a, b) for a, b in zip(new, state)))
        for part, value in zip(states, new):
            part[t + 1] = value
        state = new
    hs = states[0][1:] if keep is None else torch.where(keep, states[0][1:], 0.0)
    return (hs, *state, pres, *states)


def _loop(xs, weight, h, c, n, m, keep, forget: str, stabilizer: str):
    """:func:`_forward`'s (hs, h, c, n, m) without its buffers written in place, for autograd
    to differentiate (a second derivative, :mod:`lstmkit.kernels.second_order`)."""
    state, hs = sLSTMState(h, c, n, m), []
    for t in range(xs.shape[0]):
        pre = torch.baddbmm(xs[t], state.h, weight)
        new = pointwise(*pre.chunk(4, -1), state, forget=forget, stabilizer=stabilizer)
        if keep is not None:
            new = sLSTMState(*(torch.where(keep[t], a, b) for a, b in zip(new, state)))
        hs.append(new.h if keep is None else torch.where(keep[t], new.h, 0.0))
        state = new
    return (torch.stack(hs), *state)


def _backward(weight, pres, H, C, N, M, keep, forget: str, stabilizer: str, d_hs, *d_final):
    """Gradients (xs, weight, h, c, n, m) from those of (hs, final h, c, n, m)."""
    T = pres.shape[0]
    d_state = list(d_final)
    d_pres = torch.empty_like(pres)
    weight_t = weight.transpose(1, 2)  # (NH, 4 DH, DH)
    for t in range(T - 1, -1, -1):
        d_new = [d_state[0] + d_hs[t], *d_state[1:]]
        d_pre, d_prev = _step_backward(pres[t], H[t + 1], C[t], N[t], M[t], d_new, forget,
                                       stabilizer)
        if keep is not None:  # where, not a product: padding may hold NaN
            d_pre = torch.where(keep[t], d_pre, 0.0)
            d_prev = [torch.where(keep[t], a, d) for a, d in zip(d_prev, d_state)]
        d_pres[t] = d_pre
        d_prev[0] = d_prev[0] + torch.bmm(d_pre, weight_t)
        d_state = d_prev
    NH, B, DH = H.shape[1:]
    h_prev = H[:-1].permute(1, 0, 2, 3).reshape(NH, T * B, DH)
    d_pres_heads = d_pres.permute(1, 0, 2, 3).reshape(NH, T * B, 4 * DH)
    d_weight = torch.bmm(h_prev.transpose(1, 2), d_pres_heads)  # (NH, DH, 4 DH)
    return (d_pres, d_weight, *d_state)


# Under torch.compile, torch.export or a torch.func transform the scan is one custom operator:
# traced, the Python time loop would unroll into a graph per length. The fake kernel's shapes
# are symbolic in T and B; autograd is the same hand-written backward, as a second operator.
# Eager calls keep _Scan (no custom op dispatch per call).

_Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("lstmkit::slstm_scan", mutates_args=())
def scan_op(xs: Tensor, weight: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor,
            keep: Tensor | None, forget: str, stabilizer: str) -> _Outputs:
    """(hs, final h, c, n, m, pres, H, C, N, M): :func:`_forward`'s results."""
    hs, *rest = _forward(xs, weight, h, c, n, m, keep, forget, stabilizer)
    return (hs.clone(), *rest)  # hs may be a view of H: an operator's outputs may not alias


@scan_op.register_fake
def _(xs, weight, h, c, n, m, keep, forget, stabilizer):
    steps = xs.shape[0]
    states = [h.new_empty((steps + 1, *h.shape)) for _ in range(4)]
    return (xs.new_empty((steps, *h.shape)), *(t.new_empty(t.shape) for t in (h, c, n, m)),
            xs.new_empty(xs.shape), *states)


@torch.library.custom_op("lstmkit::slstm_scan_backward", mutates_args=())
def scan_backward_op(weight: Tensor, pres: Tensor, H: Tensor, C: Tensor, N: Tensor, M: Tensor,
                     keep: Tensor | None, forget: str, stabilizer: str, d_hs: Tensor,
                     d_h: Tensor, d_c: Tensor, d_n: Tensor, d_m: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (xs, weight, h, c, n, m): :func:`_backward`'s results."""
    return _backward(weight, pres, H, C, N, M, keep, forget, stabilizer, d_hs, d_h, d_c, d_n,
                     d_m)


@scan_backward_op.register_fake
def _(weight, pres, H, C, N, M, keep, forget, stabilizer, d_hs, d_h, d_c, d_n, d_m):
    return (pres.new_empty(pres.shape), weight.new_empty(weight.shape),
            *(t.new_empty(t.shape) for t in (d_h, d_c, d_n, d_m)))


def _setup_context(ctx, inputs, output):
    xs, weight, h, c, n, m, keep, forget, stabilizer = inputs
    ctx.options = forget, stabilizer
    ctx.save_for_backward(weight, *output[5:], keep)


def _scan_backward(ctx, d_hs, d_h, d_c, d_n, d_m, *unused):
    weight, pres, H, C, N, M, keep = ctx.saved_tensors
    grads = [torch.zeros_like(H[0]) if d is None else d for d in (d_h, d_c, d_n, d_m)]
    d_hs = torch.zeros_like(H[1:]) if d_hs is None else d_hs
    out = scan_backward_op(weight, pres, H, C, N, M, keep, *ctx.options, d_hs, *grads)
    return (*out, None, None, None)


scan_op.register_autograd(_scan_backward, setup_context=_setup_context)
_scan_call = transformable(scan_op, _setup_context,
                           lambda ctx, grads: _scan_backward(ctx, *grads), scan_backward_op)


def _split_ties(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The share of max(x, y)'s gradient that goes to x, as torch.maximum gives it."""
    return torch.where(x > y, 1.0, torch.where(x == y, 0.5, 0.0))


def _step_backward(pre, h, c0, n0, m0, d_new, forget, stabilizer):
    """Gradients of one step (``pointwise`` after the recurrent product) with respect to its
    pre-activations (NH, B, 4 DH) and the previous (h: 0, c, n, m), from those of the new state
    (h, c, n, m); h is the step's output (saved), the rest is recomputed."""
    dh, dc, dn, dm = d_new
    i, f, z, o = pre.chunk(4, -1)
    a = log_forget(f, forget) + m0
    to_i = _split_ties(i, a)
    if stabilizer == "nxai":
        fresh = n0 == 0
        m = torch.where(fresh, i, torch.maximum(i, a))
        to_i = torch.where(fresh, 1.0, to_i)
    else:
        m = torch.maximum(i, a)
    e_i, e_f = torch.exp(i - m), torch.exp(a - m)
    if stabilizer == "nxai":  # clamped at 1: the gradient passes below 1, halves at 1
        ones = torch.ones_like(e_i)
        i_, f_ = torch.minimum(e_i, ones), torch.minimum(e_f, ones)
        e_i, e_f = e_i * _split_ties(ones, e_i), e_f * _split_ties(ones, e_f)
    else:
        i_, f_ = e_i, e_f
    zt, ot = torch.tanh(z), torch.sigmoid(o)
    n = f_ * n0 + i_
    c = f_ * c0 + i_ * zt
    d_o = dh * (c / n) * ot * (1 - ot)
    dc = dc + dh * ot / n
    dn = dn - dh * h / n
    g_i = (dc * zt + dn) * e_i  # with respect to i~ - m
    g_f = (dc * c0 + dn * n0) * e_f  # with respect to log f + m0 - m
    d_m = dm - g_i - g_f
    d_i = g_i + d_m * to_i
    d_a = g_f + d_m * (1 - to_i)
    d_f = d_a * torch.sigmoid(-f) if forget == "sigmoid" else d_a
    d_z = dc * i_ * (1 - zt * zt)
    d_pre = torch.cat([d_i, d_f, d_z, d_o], -1)
    return d_pre, [torch.zeros_like(dh), dc * f_, dn * f_, d_a]


def _triton_refuses(head_size: int) -> str | None:
    """Why the Triton kernels do not run heads of ``head_size`` units, or None."""
    from lstmkit.kernels.triton.xlstm import MAX_HEAD  # the package, not Triton: no cost

    if head_size > MAX_HEAD:
        return (f"one program holds a head's units: head size <= {MAX_HEAD}, "
                f"got {head_size}")
    return None


def _check(x, r, forget, stabilizer) -> tuple[int, int]:
    if forget not in FORGET_GATES:
        raise ValueError(f"forget: expected one of {FORGET_GATES}, got {forget!r}")
    if stabilizer not in STABILIZERS:
        raise ValueError(f"stabilizer: expected one of {STABILIZERS}, got {stabilizer!r}")
    for name, t in (("x", x), ("r", r)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if r.dim() != 4 or r.shape[2] != 4 or r.shape[1] != r.shape[3]:
        raise ValueError(f"r: expected shape (NH, DH, 4, DH), got {tuple(r.shape)}")
    NH, DH = r.shape[:2]
    if x.dim() != 3 or x.shape[-1] != 4 * NH * DH:
        raise ValueError(f"x: expected shape (B, T, {4 * NH * DH}), got {tuple(x.shape)}")
    if x.dtype != r.dtype or x.device != r.device:
        raise TypeError(f"x: expected {r.dtype} on {r.device} (r's), got {x.dtype} on {x.device}")
    return NH, DH
