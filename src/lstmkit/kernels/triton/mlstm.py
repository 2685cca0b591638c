r"""Triton kernels of the chunkwise mLSTM, forward and backward (equations:
:mod:`lstmkit.cells.mlstm`; the chunkwise form: :mod:`lstmkit.functional.mlstm`).

Dimensions: B batch, NH heads, BH = B * NH, T' time padded to NC chunks of L steps, DK query/key
size, DV value size, E = DV + 1 (v with a column of ones: the last column of every product is the
normaliser n's, so [C | n] is one (DK, E) matrix per head); BL, BK, BE a program's block of steps,
key units and value columns. "acc" is float32 (float64 for float64); q, k, v may be float16 or
bfloat16, the states and every product accumulate in acc.

The gates are O(T) pointwise work and run in torch, with autograd, in acc (the chunk-level
stabiliser recurrence in float64, so that sums of log forget gates over long sequences lose
nothing): per step u_s = i~_s - F_s (F the log forget gates summed within the chunk), the running
stabiliser top_t = max(m_in, max_{s<=t} u_s) and la_t = m_in - top_t; per chunk the stabiliser
m_in entering it, A = m_in - p and W_s = u_s - p with p = m_out - g (g the chunk's total log
forget gate, m_out the stabiliser leaving it). The kernels then compute two linear maps:

    states   S_0 = [C_0 | n_0],  S_{c+1} = e^{A_c} S_c + sum_s e^{W_s} k_s [v_s | 1]^T
    outputs  out_t = s (e^{la_t} q_t^T S_c + sum_{s<=t} e^{u_s - top_t} (q_t . k_s) [v_s | 1])

(s = DK^-1/2) and their gradients with respect to every input; torch divides the outputs by the
normaliser, h_t = out_t[:DV] / (max(|out_t[DV]|, e^{-(F_t + top_t)}) + eps).

Forward: ``_states_forward`` runs over the chunks in order, one program per (head, key block,
value block), its state block in registers; ``_outputs_forward`` runs every chunk at once, one
program per (chunk, head, value block). Backward: ``_states_backward`` runs over the chunks in
reverse, carrying the gradient G of the state (and adding each chunk's q^T dout to it);
``_chunk_backward``, one program per (chunk, head), computes every other gradient of the chunk
from the saved states S_c and the gradients G_{c+1}.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from lstmkit._transforms import through_ops
from lstmkit.cells._heads import log_forget
from lstmkit.cells.mlstm import mLSTMState
from lstmkit.kernels import second_order
from lstmkit.kernels.triton import common

_MAX_BLOCK = 64
"""Key units and value columns per block: larger heads loop over blocks."""
_WARPS = {"_states_forward": 4, "_states_backward": 4, "_outputs_forward": 8,
          "_chunk_backward": 8}
"""Warps per kernel: the chunk kernels hold several (BL, BL) float32 matrices (with four warps,
ptxas spills 14 KB of _chunk_backward at L = D = 64, sm_90)."""


@triton.jit
def _decay(U, TOP, rows, rl, ml):
    """(BL t, BL s): e^{u_s - top_t} for s <= t in the chunk, else 0."""
    u = tl.load(U + rows, mask=ml, other=0.0)
    top = tl.load(TOP + rows, mask=ml, other=0.0)
    causal = (rl[None, :] <= rl[:, None]) & ml[None, :] & ml[:, None]
    return tl.exp(tl.where(causal, u[None, :] - top[:, None], -float("inf")))  # <= 1 where kept


# The kernels write their pointer arithmetic out rather than call helpers inside loops: each
# call of a jit function costs Triton's interpreter a re-patching of the language (about a
# millisecond), which the tests would pay thousands of times.


@triton.jit
def _states_forward(
    K, V1,  # (BH, T', DK), (BH, T', E)
    A, W,  # (BH, NC), (BH, T') acc: log decay of the state, log weight of each step
    S,  # (BH, NC + 1, DK, E) acc: S[:, 0] holds the initial state; out: the state entering
    #     each chunk, and the last one
    T, NC, DK, E, L, PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    acc_ty = S.dtype.element_ty
    bh = tl.program_id(0).to(tl.int64)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BK,)
    re = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)  # (BE,)
    rl = tl.arange(0, BLOCK_L)  # (BL,)
    ml, mk, me = rl < L, rk < DK, re < E
    ptrs = S + bh * (NC + 1) * DK * E + rk[:, None] * E + re[None, :]  # (BK, BE) of S[bh, 0]
    mask = mk[:, None] & me[None, :]
    k_mask, v_mask = ml[:, None] & mk[None, :], ml[:, None] & me[None, :]
    state = tl.load(ptrs, mask=mask, other=0.0)
    for c in range(NC):
        rows = bh * T + c * L + rl  # (BL,)
        k = tl.load(K + rows[:, None] * DK + rk[None, :], mask=k_mask, other=0.0).to(acc_ty)
        v = tl.load(V1 + rows[:, None] * E + re[None, :], mask=v_mask, other=0.0).to(acc_ty)
        w = tl.exp(tl.load(W + rows, mask=ml, other=0.0))  # (BL,)
        decay = tl.exp(tl.load(A + bh * NC + c))
        state = decay * state + tl.dot(tl.trans(k * w[:, None]), v, input_precision=PRECISION,
                                       out_dtype=acc_ty)
        tl.store(ptrs + (c + 1) * DK * E, state, mask=mask)


@triton.jit
def _outputs_forward(
    Q, K, V1,  # (BH, T', DK), (BH, T', DK), (BH, T', E)
    U, TOP, LA,  # (BH, T') acc
    S,  # (BH, NC + 1, DK, E) acc: from _states_forward
    OUT,  # (BH, T', E) acc: out, numerator | normaliser
    T, NC, DK, E, L, scale, PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    acc_ty = S.dtype.element_ty
    c, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    re = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)  # (BE,)
    rl = tl.arange(0, BLOCK_L)
    ml, me = rl < L, re < E
    rows = bh * T + c * L + rl  # (BL,)
    state = S + (bh * (NC + 1) + c) * DK * E + re[None, :]  # (1, BE) of S[bh, c]
    scores = tl.zeros((BLOCK_L, BLOCK_L), dtype=acc_ty)  # q_t . k_s
    inter = tl.zeros((BLOCK_L, BLOCK_E), dtype=acc_ty)  # q_t^T S_c
    for k0 in range(0, DK, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < DK
        qk_mask = ml[:, None] & mk[None, :]
        q = tl.load(Q + rows[:, None] * DK + rk[None, :], mask=qk_mask, other=0.0)
        k = tl.load(K + rows[:, None] * DK + rk[None, :], mask=qk_mask, other=0.0)
        scores = tl.dot(q, tl.trans(k), acc=scores, input_precision=PRECISION, out_dtype=acc_ty)
        block = tl.load(state + rk[:, None] * E, mask=mk[:, None] & me[None, :], other=0.0)
        inter = tl.dot(q.to(acc_ty), block, acc=inter, input_precision=PRECISION,
                       out_dtype=acc_ty)
    v_ptrs, v_mask = rows[:, None] * E + re[None, :], ml[:, None] & me[None, :]
    v = tl.load(V1 + v_ptrs, mask=v_mask, other=0.0).to(acc_ty)
    alpha = tl.exp(tl.load(LA + rows, mask=ml, other=0.0))  # (BL,)
    intra = tl.dot(_decay(U, TOP, rows, rl, ml) * scores, v, input_precision=PRECISION,
                   out_dtype=acc_ty)
    tl.store(OUT + v_ptrs, scale * (alpha[:, None] * inter + intra), mask=v_mask)


@triton.jit
def _states_backward(
    Q, DOUT, LA, A,  # (BH, T', DK), (BH, T', E) acc, (BH, T') acc, (BH, NC) acc
    G,  # (BH, NC, DK, E) acc: out, the gradient of the state leaving each chunk
    G0,  # (BH, DK, E) acc: in, the gradient of the last state; out, of the initial one
    T, NC, DK, E, L, scale, PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    acc_ty = G.dtype.element_ty
    bh = tl.program_id(0).to(tl.int64)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    re = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)
    rl = tl.arange(0, BLOCK_L)
    ml, mk, me = rl < L, rk < DK, re < E
    block = rk[:, None] * E + re[None, :]  # (BK, BE)
    mask = mk[:, None] & me[None, :]
    q_mask, d_mask = ml[:, None] & mk[None, :], ml[:, None] & me[None, :]
    grad = tl.load(G0 + bh * DK * E + block, mask=mask, other=0.0)
    for s in range(NC):
        c = NC - 1 - s
        tl.store(G + (bh * NC + c) * DK * E + block, grad, mask=mask)
        rows = bh * T + c * L + rl
        q = tl.load(Q + rows[:, None] * DK + rk[None, :], mask=q_mask, other=0.0).to(acc_ty)
        d = tl.load(DOUT + rows[:, None] * E + re[None, :], mask=d_mask, other=0.0)
        alpha = tl.exp(tl.load(LA + rows, mask=ml, other=0.0))
        grad = tl.exp(tl.load(A + bh * NC + c)) * grad + scale * tl.dot(
            tl.trans(q * alpha[:, None]), d, input_precision=PRECISION, out_dtype=acc_ty)
    tl.store(G0 + bh * DK * E + block, grad, mask=mask)


@triton.jit
def _chunk_backward(
    Q, K, V1, U, TOP, LA, W, A, S, G, DOUT,  # as above; G from _states_backward
    DQ, DK_, DV1,  # (BH, T', DK), (BH, T', DK), (BH, T', E) acc: out
    DU, DTOP, DLA, DW,  # (BH, T') acc: out
    DA,  # (BH, NC) acc: out
    T, NC, DK, E, L, scale, PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    acc_ty = S.dtype.element_ty
    c, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    rl = tl.arange(0, BLOCK_L)
    ml = rl < L
    rows = bh * T + c * L + rl  # (BL,)
    qk_rows, ve_rows = rows[:, None] * DK, rows[:, None] * E  # (BL, 1) offsets
    state = S + (bh * (NC + 1) + c) * DK * E  # S[bh, c]
    grad_next = G + (bh * NC + c) * DK * E  # G[bh, c]: of the state after chunk c
    alpha = tl.exp(tl.load(LA + rows, mask=ml, other=0.0))  # (BL,)
    w = tl.exp(tl.load(W + rows, mask=ml, other=0.0))  # (BL,)
    decay = _decay(U, TOP, rows, rl, ml)  # (BL t, BL s)
    scores = tl.zeros((BLOCK_L, BLOCK_L), dtype=acc_ty)  # q_t . k_s
    for k0 in range(0, DK, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        qk_mask = ml[:, None] & (rk < DK)[None, :]
        q = tl.load(Q + qk_rows + rk[None, :], mask=qk_mask, other=0.0)
        k = tl.load(K + qk_rows + rk[None, :], mask=qk_mask, other=0.0)
        scores = tl.dot(q, tl.trans(k), acc=scores, input_precision=PRECISION, out_dtype=acc_ty)
    dvals = tl.zeros((BLOCK_L, BLOCK_L), dtype=acc_ty)  # dout_t . [v_s | 1]
    for e0 in range(0, E, BLOCK_E):
        re = e0 + tl.arange(0, BLOCK_E)
        ve_mask = ml[:, None] & (re < E)[None, :]
        d = tl.load(DOUT + ve_rows + re[None, :], mask=ve_mask, other=0.0)
        v = tl.load(V1 + ve_rows + re[None, :], mask=ve_mask, other=0.0).to(acc_ty)
        dvals = tl.dot(d, tl.trans(v), acc=dvals, input_precision=PRECISION, out_dtype=acc_ty)
    probs = decay * scores
    dlog = scale * probs * dvals  # the gradient of log e^{u_s - top_t}
    tl.store(DU + rows, tl.sum(dlog, axis=0), mask=ml)
    tl.store(DTOP + rows, -tl.sum(dlog, axis=1), mask=ml)
    mixed = decay * dvals
    d_decay = tl.zeros((1,), dtype=acc_ty)  # <G_{c+1}, S_c>
    for k0 in range(0, DK, BLOCK_K):  # dq, dk by key block
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < DK
        qk_mask = ml[:, None] & mk[None, :]
        q = tl.load(Q + qk_rows + rk[None, :], mask=qk_mask, other=0.0).to(acc_ty)
        k = tl.load(K + qk_rows + rk[None, :], mask=qk_mask, other=0.0).to(acc_ty)
        from_state = tl.zeros((BLOCK_L, BLOCK_K), dtype=acc_ty)  # dout_t S_c^T
        from_grad = tl.zeros((BLOCK_L, BLOCK_K), dtype=acc_ty)  # [v_s | 1] G_{c+1}^T
        for e0 in range(0, E, BLOCK_E):
            re = e0 + tl.arange(0, BLOCK_E)
            me = re < E
            block, mask = rk[:, None] * E + re[None, :], mk[:, None] & me[None, :]
            s_block = tl.load(state + block, mask=mask, other=0.0)  # (BK, BE)
            g_block = tl.load(grad_next + block, mask=mask, other=0.0)
            ve_mask = ml[:, None] & me[None, :]
            d = tl.load(DOUT + ve_rows + re[None, :], mask=ve_mask, other=0.0)
            v = tl.load(V1 + ve_rows + re[None, :], mask=ve_mask, other=0.0).to(acc_ty)
            from_state = tl.dot(d, tl.trans(s_block), acc=from_state, input_precision=PRECISION,
                                out_dtype=acc_ty)
            from_grad = tl.dot(v, tl.trans(g_block), acc=from_grad, input_precision=PRECISION,
                               out_dtype=acc_ty)
            d_decay += tl.sum(tl.sum(s_block * g_block, axis=1), axis=0)
        dq = alpha[:, None] * from_state + tl.dot(mixed, k, input_precision=PRECISION,
                                                  out_dtype=acc_ty)
        dk = scale * tl.dot(tl.trans(mixed), q, input_precision=PRECISION, out_dtype=acc_ty) \
            + w[:, None] * from_grad
        tl.store(DQ + qk_rows + rk[None, :], scale * dq, mask=qk_mask)
        tl.store(DK_ + qk_rows + rk[None, :], dk, mask=qk_mask)
    d_la = tl.zeros((BLOCK_L,), dtype=acc_ty)
    d_w = tl.zeros((BLOCK_L,), dtype=acc_ty)
    for e0 in range(0, E, BLOCK_E):  # dv by value block
        re = e0 + tl.arange(0, BLOCK_E)
        me = re < E
        q_state = tl.zeros((BLOCK_L, BLOCK_E), dtype=acc_ty)  # q_t^T S_c
        k_grad = tl.zeros((BLOCK_L, BLOCK_E), dtype=acc_ty)  # k_s^T G_{c+1}
        for k0 in range(0, DK, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < DK
            qk_mask = ml[:, None] & mk[None, :]
            block, mask = rk[:, None] * E + re[None, :], mk[:, None] & me[None, :]
            q = tl.load(Q + qk_rows + rk[None, :], mask=qk_mask, other=0.0).to(acc_ty)
            k = tl.load(K + qk_rows + rk[None, :], mask=qk_mask, other=0.0).to(acc_ty)
            q_state = tl.dot(q, tl.load(state + block, mask=mask, other=0.0), acc=q_state,
                             input_precision=PRECISION, out_dtype=acc_ty)
            k_grad = tl.dot(k, tl.load(grad_next + block, mask=mask, other=0.0), acc=k_grad,
                            input_precision=PRECISION, out_dtype=acc_ty)
        ve_mask = ml[:, None] & me[None, :]
        d = tl.load(DOUT + ve_rows + re[None, :], mask=ve_mask, other=0.0)
        v = tl.load(V1 + ve_rows + re[None, :], mask=ve_mask, other=0.0).to(acc_ty)
        d_la += tl.sum(d * q_state, axis=1)
        d_w += tl.sum(k_grad * v, axis=1)
        dv = scale * tl.dot(tl.trans(probs), d, input_precision=PRECISION, out_dtype=acc_ty) \
            + w[:, None] * k_grad
        tl.store(DV1 + ve_rows + re[None, :], dv, mask=ve_mask)
    tl.store(DLA + rows, scale * alpha * d_la, mask=ml)
    tl.store(DW + rows, w * d_w, mask=ml)
    tl.store(DA + bh * NC + c + tl.arange(0, 1), tl.exp(tl.load(A + bh * NC + c)) * d_decay)


def _blocks(chunk: int, dk: int, e: int) -> dict:
    """The block sizes: a whole chunk of steps, key units and value columns up to _MAX_BLOCK."""
    return dict(BLOCK_L=common.pad(chunk), BLOCK_K=min(common.pad(dk), _MAX_BLOCK),
                BLOCK_E=min(common.pad(e), _MAX_BLOCK))


def _state_grid(heads: int, dk: int, e: int, blocks: dict) -> tuple[int, int, int]:
    """One program per head and (key, value) block of the state."""
    return heads, triton.cdiv(dk, blocks["BLOCK_K"]), triton.cdiv(e, blocks["BLOCK_E"])


def forward(q, k, v1, u, top, la, a, w, s0, chunk: int, scale: float):
    """The forward kernels: (out (BH, T', E), the last state (BH, DK, E), every chunk's state
    (BH, NC + 1, DK, E), which :func:`backward` reads).

    Shapes: q, k (BH, T', DK), v1 (BH, T', E) the input dtype; u, top, la, w (BH, T'), a
    (BH, NC), s0 (BH, DK, E) acc.
    """
    BH, T, DK = q.shape
    E, NC = v1.shape[-1], a.shape[-1]
    states = s0.new_empty(BH, NC + 1, DK, E)  # (BH, NC + 1, DK, E)
    states[:, 0] = s0
    blocks = _blocks(chunk, DK, E)
    sizes = (T, NC, DK, E, chunk)
    precision = common.precision(q.dtype)
    _launch(_states_forward, _state_grid(BH, DK, E, blocks),
            k, v1, a, w, states, *sizes, PRECISION=precision, **blocks)
    out = s0.new_empty(BH, T, E)
    _launch(_outputs_forward, (NC, BH, triton.cdiv(E, blocks["BLOCK_E"])),
            q, k, v1, u, top, la, states, out, *sizes, scale, PRECISION=precision, **blocks)
    return out, states[:, NC].clone(), states  # the last state: not a view of what is saved


def backward(q, k, v1, u, top, la, a, w, states, d_out, d_last, chunk: int, scale: float):
    """The gradients of (q, k, v1, u, top, la, a, w, s0) from those of out and the last state
    (None for zeros) and what :func:`forward` saved."""
    BH, T, DK = q.shape
    E, NC = v1.shape[-1], a.shape[-1]
    acc = states.dtype
    d_out = states.new_zeros(BH, T, E) if d_out is None else d_out.to(acc).contiguous()
    g0 = torch.zeros_like(states[:, 0]) if d_last is None else d_last.to(acc, copy=True)
    g0 = g0.contiguous()
    grads = states.new_empty(BH, NC, DK, E)
    blocks = _blocks(chunk, DK, E)
    sizes = (T, NC, DK, E, chunk)
    precision = common.precision(q.dtype)
    _launch(_states_backward, _state_grid(BH, DK, E, blocks),
            q, d_out, la, a, grads, g0, *sizes, scale, PRECISION=precision, **blocks)
    dq, dk = (q.new_empty(q.shape, dtype=acc) for _ in range(2))
    dv1 = v1.new_empty(v1.shape, dtype=acc)
    du, dtop, dla, dw = (u.new_empty(u.shape) for _ in range(4))
    da = a.new_empty(a.shape)
    _launch(_chunk_backward, (NC, BH),
            q, k, v1, u, top, la, w, a, states, grads, d_out, dq, dk, dv1, du, dtop, dla,
            dw, da, *sizes, scale, PRECISION=precision, **blocks)
    return [dq.to(q.dtype), dk.to(k.dtype), dv1.to(v1.dtype), du, dtop, dla, da, dw, g0]


class _Chunkwise(torch.autograd.Function):
    """(q, k, v1, u, top, la, a, w, s0) -> (out, the last state) by :func:`forward` and
    :func:`backward`. ``extra`` = (L, scale)."""

    @staticmethod
    def forward(ctx, extra, q, k, v1, u, top, la, a, w, s0):
        out, last, states = forward(q, k, v1, u, top, la, a, w, s0, *extra)
        ctx.extra = extra
        ctx.save_for_backward(q, k, v1, u, top, la, a, w, states, s0)
        return out, last

    @staticmethod
    def backward(ctx, d_out, d_last):
        *inputs, states, s0 = ctx.saved_tensors
        if second_order.wants_graph():  # the two linear maps again, in torch: grad of grad
            return (None, *second_order.graph_gradients(
                functools.partial(_torch_forward, *ctx.extra), [*inputs, s0],
                ctx.needs_input_grad[1:], [d_out, d_last]))
        return (None, *backward(*inputs, states, d_out, d_last, *ctx.extra))


def _torch_forward(chunk: int, scale: float, q, k, v1, u, top, la, a, w, s0):
    """:func:`forward`'s (out, last state) by torch ops, as the module docstring writes the two
    maps: for a second derivative (:mod:`lstmkit.kernels.second_order`)."""
    chunks = a.shape[-1]
    q, k, v1 = (t.to(s0.dtype).unflatten(1, (chunks, chunk)) for t in (q, k, v1))
    u, top, la, w = (t.unflatten(1, (chunks, chunk)) for t in (u, top, la, w))  # (BH, NC, L)
    states = [s0]  # S_c (BH, DK, E)
    for c in range(chunks):
        written = (k[:, c] * w[:, c, :, None].exp()).transpose(1, 2) @ v1[:, c]
        states.append(a[:, c, None, None].exp() * states[-1] + written)
    entering = torch.stack(states[:-1], 1)  # (BH, NC, DK, E)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    decay = torch.where(causal, u[..., None, :] - top[..., :, None], -math.inf).exp()
    intra = (decay * (q @ k.transpose(-1, -2))) @ v1  # (BH, NC, L, E)
    out = scale * (la.exp()[..., None] * (q @ entering) + intra)
    return out.flatten(1, 2), states[-1]


def _launch(kernel, grid, *args, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)`` with the kernel's :data:`_WARPS` (one place, so
    that benchmarks/triton_xlstm_compile_check.py can record the launches instead)."""
    if args[0].device.type != "cuda" and not isinstance(kernel, common.InterpretedFunction):
        raise RuntimeError("Triton's kernels were built for a GPU: set TRITON_INTERPRET=1 before "
                           "lstmkit's first Triton run to run them on the CPU")
    kernel[grid](*args, **constexprs, num_warps=_WARPS[kernel.__name__])


def _stabilisers(g: torch.Tensor, top: torch.Tensor, m0: torch.Tensor):
    """The stabiliser entering and leaving each chunk, (m_in, m_out) each (B, NH, NC), from
    each chunk's total log forget gate g and largest u (top), and the initial m0 (B, NH).

    m_out_c = g_c + max(m_in_c, top_c) unrolls, with G_c = g_0 + ... + g_c, to
    m_out_c = G_c + max(m0, max_{c' <= c} (top_c' - G_c' + g_c')): a cumulative max, in float64
    because G grows with the sequence and its rounding would otherwise reach m."""
    g64, top64, m64 = g.double(), top.double(), m0.double()[..., None]
    total = g64.cumsum(-1)  # (B, NH, NC): G_c
    m_out = total + torch.maximum(m64, (top64 - total + g64).cummax(-1).values)
    m_in = torch.cat([m64, m_out[..., :-1]], -1)
    return m_in.to(g.dtype), m_out.to(g.dtype)


def chunkwise(q, k, v, i, f, state: mLSTMState, chunk_size: int, eps: float, forget: str):
    """The chunkwise mLSTM by the Triton kernels: (h~ (B, NH, T, DV), mLSTMState), as
    :func:`lstmkit.functional.mlstm` with ``form="chunkwise"`` (which calls it; its arguments
    are checked there). The state comes back in q's dtype; inside it is acc."""
    B, NH, T, DK = q.shape
    DV = v.shape[-1]
    acc = common.accumulator(q.dtype)
    L = chunk_size
    NC = math.ceil(T / L)
    pad = NC * L - T
    logf, i = log_forget(f.to(acc), forget), i.to(acc)
    if pad:  # steps that leave the state unchanged: no input (i~ = -inf), no decay (log f = 0)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        i = F.pad(i, (0, pad), value=-math.inf)
        logf = F.pad(logf, (0, pad))
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], -1)  # (B, NH, T', E)
    b = logf.unflatten(-1, (NC, L)).cumsum(-1)  # (B, NH, NC, L): F within each chunk
    u = i.unflatten(-1, (NC, L)) - b
    u_max = u.cummax(-1).values
    m_in, m_out = _stabilisers(b[..., -1], u_max[..., -1], state.m.to(acc))
    top = torch.maximum(m_in[..., None], u_max)  # (B, NH, NC, L): m_t = F_t + top_t
    p = m_out - b[..., -1]  # (B, NH, NC)
    s0 = torch.cat([state.C, state.n[..., None]], -1).to(acc)  # (B, NH, DK, E)
    flat = lambda t: t.flatten(0, 1).contiguous()  # noqa: E731  (B, NH, ...) -> (BH, ...)
    steps = lambda t: flat(t.flatten(2, 3))  # noqa: E731  (B, NH, NC, L) -> (BH, T')
    args = (flat(q), flat(k), flat(v1), steps(u), steps(top), steps(m_in[..., None] - top),
            flat(m_in - p), steps(u - p[..., None]), flat(s0))
    if through_ops():
        from lstmkit.kernels.triton import ops

        out, last = ops.mlstm_chunkwise(*args, L, DK ** -0.5)
    else:
        out, last = _Chunkwise.apply((L, DK ** -0.5), *args)
    out = out.unflatten(0, (B, NH))  # (B, NH, T', E)
    lower = torch.exp(-(b + top).flatten(2))  # (B, NH, T'): e^{-m_t}
    h = out[..., :DV] / (torch.maximum(out[..., DV].abs(), lower)[..., None] + eps)
    last = last.unflatten(0, (B, NH)).to(q.dtype)
    return h[:, :, :T].to(q.dtype), mLSTMState(last[..., :DV], last[..., DV],
                                               m_out[..., -1].to(q.dtype))
