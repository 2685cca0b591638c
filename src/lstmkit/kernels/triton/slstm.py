r"""Triton kernels of the sLSTM recurrence, forward and backward (equations and NX-AI's
departures from the paper: :mod:`lstmkit.cells.slstm`).

Dimensions: B batch, T time, NH heads, DH units per head, H = NH * DH, G = 4 gates i, f, z, o;
BB, BH, BK a program's block of batch rows, head units and product depth. Buffers are contiguous
and time-major; "acc" is float32 (float64 for float64): the states h, c, n, m and the saved
pre-activations are acc whatever the input's dtype, the recurrent product accumulates in acc.

The persistent design of the LSTM kernels (:mod:`.lstm`): the input terms of every step are one
matrix product in torch; one launch loops over all steps, a program owning BB batch rows and one
head's DH units, so the block-diagonal recurrent matrix never needs another program's h and no
grid barrier is needed; the head's (DH, 4 DH) block stays in registers when it fits. The forward
saves the gate pre-activations; the backward runs the steps in reverse from them, recomputing the
gates, and yields their gradient (that of the input terms); the recurrent weight's gradient is one
product over all steps in torch.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lstmkit._transforms import through_ops
from lstmkit.cells.slstm import sLSTMState
from lstmkit.kernels import second_order
from lstmkit.kernels.triton import common


@triton.jit
def _weight_ptrs(R, u_in, u_out, DH):
    """Pointers (len(u_in), len(u_out)) to gate i's block of R as a dense (H, 4, H) matrix,
    R[head, d_in, 0, d_out] at [u_in, u_out] (u = head * DH + d), and the block-diagonal mask:
    1 where both units are in the same head; add g*DH for gate g."""
    ptrs = R + (u_in.to(tl.int64) * 4)[:, None] * DH + (u_out % DH)[None, :]
    return ptrs, (u_in // DH)[:, None] == (u_out // DH)[None, :]


# A program owns HPP whole heads, UP = HPP * DH units (at least 16, tl.dot's smallest side, when
# heads are small): its recurrent product is the dense (UP, 4 UP) block of R's diagonal, masked
# to the heads. Inside the time loop the kernels write their arithmetic out rather than call
# helpers (tanh, log sigmoid, pointers): each call of a jit function costs Triton's interpreter
# a re-patching of the language (about a millisecond), which the tests would pay at every step.


@triton.jit
def _slstm_forward(
    X,  # (T, B, 4H) input terms, blocks i, f, z, o, each head-major
    R,  # (NH, DH, 4, DH) recurrent matrix
    HS, CS, NS, MS,  # (T+1, B, H) acc: states; [0] holds the initial state
    PRE,  # (T, B, 4H) acc: out, pre-activations (SAVE)
    LEN,  # (B,) int32 (LENGTHS)
    COUNT,  # unused: one program per head needs no grid barrier
    T, B, H, DH, UP, s_start, s_stop,
    FORGET_EXP: tl.constexpr, NXAI: tl.constexpr, LENGTHS: tl.constexpr, SAVE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    w_ty = R.dtype.element_ty
    u0 = tl.program_id(1) * UP  # the program's first unit
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    ru = u0 + tl.arange(0, BLOCK_H)  # (BH,): the program's units
    mb, mu = rb < B, (ru < u0 + UP) & (ru < H)
    m_bh = mb[:, None] & mu[None, :]
    units = rb[:, None].to(tl.int64) * H + ru[None, :]  # (BB, BH) in a (B, H) step
    gates = rb[:, None].to(tl.int64) * (4 * H) + ru[None, :]  # gate i in a (B, 4H) step
    if LENGTHS:
        length = tl.load(LEN + rb, mask=mb, other=0)[:, None]  # (BB, 1)
    if HOLD:  # the program's whole depth fits one block: keep its four (BK, BH) blocks
        rk = u0 + tl.arange(0, BLOCK_K)
        w_ptrs, same = _weight_ptrs(R, rk, ru, DH)
        wmask = same & ((rk < u0 + UP) & (rk < H))[:, None] & mu[None, :]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
    for t in range(s_start, s_stop):
        prev = t * B * H + units  # offsets of step t in HS, CS, NS, MS
        r_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_z = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, UP, BLOCK_K):
            rk = u0 + k0 + tl.arange(0, BLOCK_K)  # input units
            mk = (rk < u0 + UP) & (rk < H)
            hk = tl.load(HS + t * B * H + rb[:, None].to(tl.int64) * H + rk[None, :],
                         mask=mb[:, None] & mk[None, :], other=0.0).to(w_ty)  # (BB, BK)
            if not HOLD:
                w_ptrs = R + (rk.to(tl.int64) * 4)[:, None] * DH + (ru % DH)[None, :]
                wmask = ((rk // DH)[:, None] == (ru // DH)[None, :]) & mk[:, None] & mu[None, :]
                w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
                w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
                w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
            r_i = tl.dot(hk, w_i, acc=r_i, input_precision=PRECISION, out_dtype=acc_ty)
            r_f = tl.dot(hk, w_f, acc=r_f, input_precision=PRECISION, out_dtype=acc_ty)
            r_z = tl.dot(hk, w_z, acc=r_z, input_precision=PRECISION, out_dtype=acc_ty)
            r_o = tl.dot(hk, w_o, acc=r_o, input_precision=PRECISION, out_dtype=acc_ty)
        gx = X + t * B * 4 * H + gates
        a_i = r_i + tl.load(gx, mask=m_bh, other=0.0).to(acc_ty)
        a_f = r_f + tl.load(gx + H, mask=m_bh, other=0.0).to(acc_ty)
        a_z = r_z + tl.load(gx + 2 * H, mask=m_bh, other=0.0).to(acc_ty)
        a_o = r_o + tl.load(gx + 3 * H, mask=m_bh, other=0.0).to(acc_ty)
        c0 = tl.load(CS + prev, mask=m_bh, other=0.0)
        n0 = tl.load(NS + prev, mask=m_bh, other=0.0)
        m0 = tl.load(MS + prev, mask=m_bh, other=0.0)
        if FORGET_EXP:
            logfm = a_f + m0
        else:  # log sigmoid, as torch's logsigmoid: min(x, 0) - log(1 + e^-|x|)
            logfm = tl.minimum(a_f, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(a_f))) + m0
        m = tl.maximum(a_i, logfm)
        if NXAI:  # a fresh unit (n = 0) starts its stabiliser at i~; the gates clamp at 1
            m = tl.where(n0 == 0.0, a_i, m)
            i_ = tl.minimum(tl.exp(a_i - m), 1.0)
            f_ = tl.minimum(tl.exp(logfm - m), 1.0)
        else:
            i_ = tl.exp(a_i - m)
            f_ = tl.exp(logfm - m)
        c = f_ * c0 + i_ * (2.0 * tl.sigmoid(2.0 * a_z) - 1.0)  # tanh, as common.tanh
        n = f_ * n0 + i_
        h = tl.sigmoid(a_o) * c / n
        if LENGTHS:
            valid = t < length
            h = tl.where(valid, h, tl.load(HS + prev, mask=m_bh, other=0.0))
            c, n, m = tl.where(valid, c, c0), tl.where(valid, n, n0), tl.where(valid, m, m0)
        if SAVE:
            ptrs = PRE + t * B * 4 * H + gates
            tl.store(ptrs, a_i, mask=m_bh)
            tl.store(ptrs + H, a_f, mask=m_bh)
            tl.store(ptrs + 2 * H, a_z, mask=m_bh)
            tl.store(ptrs + 3 * H, a_o, mask=m_bh)
        new = prev + B * H  # step t + 1
        tl.store(HS + new, h, mask=m_bh)
        tl.store(CS + new, c, mask=m_bh)
        tl.store(NS + new, n, mask=m_bh)
        tl.store(MS + new, m, mask=m_bh)
        tl.debug_barrier()  # this program's h_t is the next step's operand


@triton.jit
def _slstm_backward(
    DY,  # (T, B, H) gradient of the outputs
    R, HS, CS, NS, MS, PRE, LEN,  # as the forward's
    GS,  # (4, B, H) acc: in, gradients of the final h, c, n, m; out, of the initial state (h's
    #      direct part: the recurrent product's share, DPRE[0] R^T, is added in torch)
    DPRE,  # (T+1, B, 4H) acc: out, gradient of the pre-activations; DPRE[T] is zeros
    COUNT, T, B, H, DH, UP, s_start, s_stop,
    FORGET_EXP: tl.constexpr, NXAI: tl.constexpr, LENGTHS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    w_ty = R.dtype.element_ty
    u0 = tl.program_id(1) * UP
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    ru = u0 + tl.arange(0, BLOCK_H)
    mb, mu = rb < B, (ru < u0 + UP) & (ru < H)
    m_bh = mb[:, None] & mu[None, :]
    units = rb[:, None].to(tl.int64) * H + ru[None, :]
    gates = rb[:, None].to(tl.int64) * (4 * H) + ru[None, :]
    if LENGTHS:
        length = tl.load(LEN + rb, mask=mb, other=0)[:, None]
    if HOLD:  # R^T's four (BK, BH) blocks: [u_out, u_in]
        rk = u0 + tl.arange(0, BLOCK_K)
        w_ptrs, same = _weight_ptrs(R, ru, rk, DH)
        w_ptrs, same = tl.trans(w_ptrs), tl.trans(same)
        wmask = same & ((rk < u0 + UP) & (rk < H))[:, None] & mu[None, :]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
    g_h = tl.load(GS + units, mask=m_bh, other=0.0)
    g_c = tl.load(GS + B * H + units, mask=m_bh, other=0.0)
    g_n = tl.load(GS + 2 * B * H + units, mask=m_bh, other=0.0)
    g_m = tl.load(GS + 3 * B * H + units, mask=m_bh, other=0.0)
    for s in range(s_start, s_stop):
        t = T - 1 - s
        prev = t * B * H + units  # offsets of step t
        # h_t also fed step t+1's product: dpre_{t+1} R^T (zero at the last step).
        rec = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, UP, BLOCK_K):
            rk = u0 + k0 + tl.arange(0, BLOCK_K)  # output units of step t+1's product
            mk = (rk < u0 + UP) & (rk < H)
            dr = DPRE + (t + 1) * B * 4 * H + rb[:, None].to(tl.int64) * (4 * H) + rk[None, :]
            dmask = mb[:, None] & mk[None, :]
            if not HOLD:
                w_ptrs = R + (ru.to(tl.int64) * 4)[None, :] * DH + (rk % DH)[:, None]
                wmask = ((rk // DH)[:, None] == (ru // DH)[None, :]) & mk[:, None] & mu[None, :]
                w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
                w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
                w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
            rec = tl.dot(tl.load(dr, mask=dmask, other=0.0).to(w_ty), w_i, acc=rec,
                         input_precision=PRECISION, out_dtype=acc_ty)
            rec = tl.dot(tl.load(dr + H, mask=dmask, other=0.0).to(w_ty), w_f, acc=rec,
                         input_precision=PRECISION, out_dtype=acc_ty)
            rec = tl.dot(tl.load(dr + 2 * H, mask=dmask, other=0.0).to(w_ty), w_z, acc=rec,
                         input_precision=PRECISION, out_dtype=acc_ty)
            rec = tl.dot(tl.load(dr + 3 * H, mask=dmask, other=0.0).to(w_ty), w_o, acc=rec,
                         input_precision=PRECISION, out_dtype=acc_ty)
        g_h += rec
        dh = g_h + tl.load(DY + prev, mask=m_bh, other=0.0).to(acc_ty)
        # Recompute the step from its pre-activations and the previous state.
        ap = PRE + t * B * 4 * H + gates
        a_i = tl.load(ap, mask=m_bh, other=0.0)
        a_f = tl.load(ap + H, mask=m_bh, other=0.0)
        a_z = tl.load(ap + 2 * H, mask=m_bh, other=0.0)
        a_o = tl.load(ap + 3 * H, mask=m_bh, other=0.0)
        h = tl.load(HS + prev + B * H, mask=m_bh, other=0.0)  # h_t
        c0 = tl.load(CS + prev, mask=m_bh, other=0.0)
        n0 = tl.load(NS + prev, mask=m_bh, other=0.0)
        m0 = tl.load(MS + prev, mask=m_bh, other=0.0)
        if FORGET_EXP:
            a = a_f + m0
        else:
            a = tl.minimum(a_f, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(a_f))) + m0
        # to_i: the share of max(i~, a)'s gradient that goes to i~, as torch.maximum gives it
        to_i = tl.where(a_i > a, 1.0, tl.where(a_i == a, 0.5, 0.0))
        if NXAI:
            fresh = n0 == 0.0
            m = tl.where(fresh, a_i, tl.maximum(a_i, a))
            to_i = tl.where(fresh, 1.0, to_i)
        else:
            m = tl.maximum(a_i, a)
        e_i = tl.exp(a_i - m)
        e_f = tl.exp(a - m)
        if NXAI:  # clamped at 1: the gradient passes below 1, halves at 1
            i_, f_ = tl.minimum(e_i, 1.0), tl.minimum(e_f, 1.0)
            e_i = e_i * tl.where(e_i < 1.0, 1.0, tl.where(e_i == 1.0, 0.5, 0.0))
            e_f = e_f * tl.where(e_f < 1.0, 1.0, tl.where(e_f == 1.0, 0.5, 0.0))
        else:
            i_, f_ = e_i, e_f
        zt, ot = 2.0 * tl.sigmoid(2.0 * a_z) - 1.0, tl.sigmoid(a_o)
        n = f_ * n0 + i_
        c = f_ * c0 + i_ * zt
        d_o = dh * (c / n) * ot * (1.0 - ot)
        dc = g_c + dh * ot / n
        dn = g_n - dh * h / n
        gi = (dc * zt + dn) * e_i  # with respect to i~ - m
        gf = (dc * c0 + dn * n0) * e_f  # with respect to log f + m0 - m
        d_m = g_m - gi - gf
        d_i = gi + d_m * to_i
        d_a = gf + d_m * (1.0 - to_i)
        if FORGET_EXP:
            d_f = d_a
        else:
            d_f = d_a * tl.sigmoid(-a_f)
        d_z = dc * i_ * (1.0 - zt * zt)
        if LENGTHS:  # past its length a row's state passes through; where: padding may be NaN
            valid = t < length
            d_i, d_f = tl.where(valid, d_i, 0.0), tl.where(valid, d_f, 0.0)
            d_z, d_o = tl.where(valid, d_z, 0.0), tl.where(valid, d_o, 0.0)
            g_c = tl.where(valid, dc * f_, g_c)
            g_n = tl.where(valid, dn * f_, g_n)
            g_m = tl.where(valid, d_a, g_m)
            g_h = tl.where(valid, 0.0, g_h)
        else:
            g_c, g_n, g_m, g_h = dc * f_, dn * f_, d_a, g_h * 0.0
        dp = DPRE + t * B * 4 * H + gates
        tl.store(dp, d_i, mask=m_bh)
        tl.store(dp + H, d_f, mask=m_bh)
        tl.store(dp + 2 * H, d_z, mask=m_bh)
        tl.store(dp + 3 * H, d_o, mask=m_bh)
        tl.debug_barrier()  # the next step reads this one's gradients back
    tl.store(GS + units, g_h, mask=m_bh)
    tl.store(GS + B * H + units, g_c, mask=m_bh)
    tl.store(GS + 2 * B * H + units, g_n, mask=m_bh)
    tl.store(GS + 3 * B * H + units, g_m, mask=m_bh)


def _plan(batch: int, heads: int, head: int, device: torch.device) -> tuple[common.Plan, int]:
    """(plan, UP): one program per batch tile and group of HPP heads (UP = HPP * DH units),
    looping over time; never the split-hidden plan, as the block-diagonal matrix keeps a head's
    product within its program."""
    per_program = min(heads, max(1, _MIN_UNITS // head))  # HPP
    units = per_program * head
    return common.plan(4, batch, units, units, device, single=True), units


_MIN_UNITS = 16
"""Units a program takes at least, in whole heads, when heads are small: tl.dot's smallest side."""


def forward(xs, r, state, lengths, forget: str, stabilizer: str, save: bool):
    """The forward kernel: (y, [h_T, c_T, n_T, m_T], saved), saved (pre, H, C, N, M) being what
    :func:`backward` reads (without ``save``, ``pre`` is a stand-in the kernel ignores).

    Shapes: xs (T, B, 4H); r (NH, DH, 4, DH); states (B, H); lengths (B,) int32 or None ->
    y (T, B, H) zero past each length, the final states in xs's dtype; saved in acc.
    """
    T, B, G = xs.shape
    NH, DH = r.shape[:2]
    H = G // 4
    acc = common.accumulator(xs.dtype)
    states = [xs.new_empty(T + 1, B, H, dtype=acc) for _ in range(4)]  # h, c, n, m
    for buffer, initial in zip(states, state):
        buffer[0] = initial
    pre = xs.new_empty(T, B, G, dtype=acc) if save else states[1]
    plan, units = _plan(B, NH, DH, xs.device)
    grid = (triton.cdiv(B, plan.block_b), triton.cdiv(H, units))
    common.launch(_slstm_forward, plan, grid, T, xs, r, *states, pre,
                  states[0] if lengths is None else lengths, states[0], T, B, H, DH, units,
                  **_flags(forget, stabilizer, lengths), SAVE=save,
                  PRECISION=common.precision(xs.dtype))
    hs = states[0][1:]
    y = hs if lengths is None else hs * common.valid(lengths, T, acc)
    return y.to(xs.dtype), [s[T].to(xs.dtype, copy=True) for s in states], [pre, *states]


def backward(r, saved, lengths, forget: str, stabilizer: str, dy, d_final):
    """The gradients [d xs, d r, d h0, d c0, d n0, d m0] from those of y and the final states
    (``dy``, ``d_final``; None for zeros) and what :func:`forward` saved."""
    pre, *states = saved
    T, B, G = pre.shape
    NH, DH = r.shape[:2]
    H = G // 4
    acc = pre.dtype
    grads = torch.stack([torch.zeros(B, H, dtype=acc, device=pre.device) if d is None
                         else d.to(acc) for d in d_final])  # (4, B, H)
    d_pre = pre.new_empty(T + 1, B, G)  # (T+1, B, 4H); [T] zeros
    d_pre[T] = 0
    dy = torch.zeros_like(states[0][1:]) if dy is None else dy.contiguous()
    plan, units = _plan(B, NH, DH, pre.device)
    grid = (triton.cdiv(B, plan.block_b), triton.cdiv(H, units))
    common.launch(_slstm_backward, plan, grid, T, dy, r, *states, pre,
                  states[0] if lengths is None else lengths, grads, d_pre, states[0],
                  T, B, H, DH, units, **_flags(forget, stabilizer, lengths),
                  PRECISION=common.precision(r.dtype))
    d_pre = d_pre[:T]
    heads = d_pre.view(T, B, 4, NH, DH)
    d_h0 = grads[0] + torch.einsum("bgke,kdge->bkd", heads[0], r.to(acc)).reshape(B, H)
    h_prev = states[0][:T].view(T, B, NH, DH)
    d_r = torch.einsum("tbkd,tbgke->kdge", h_prev, heads)  # (NH, DH, 4, DH)
    dtype = r.dtype
    return [d_pre.to(dtype), d_r.to(dtype), d_h0.to(dtype), *(g.to(dtype) for g in grads[1:])]


class _Scan(torch.autograd.Function):
    """(xs, r, h0, c0, n0, m0) -> (y, h_T, c_T, n_T, m_T) by :func:`forward` and
    :func:`backward`. ``extra`` = (forget, stabilizer, lengths (B,) int32 on the device or
    None)."""

    @staticmethod
    def forward(ctx, extra, xs, r, h0, c0, n0, m0):
        y, final, saved = forward(xs, r, [h0, c0, n0, m0], extra[2], *extra[:2],
                                  save=any(ctx.needs_input_grad))
        ctx.extra = extra
        ctx.save_for_backward(r, *saved, xs, h0, c0, n0, m0)
        return y, *final

    @staticmethod
    def backward(ctx, dy, *d_final):
        forget, stabilizer, lengths = ctx.extra
        r, *saved = ctx.saved_tensors
        saved, (xs, *state) = saved[:-5], saved[-5:]
        if second_order.wants_graph():  # through the torch scan, twice differentiable
            return (None, *second_order.graph_gradients(
                functools.partial(_torch_scan, forget, stabilizer, lengths),
                [xs, r, *state], ctx.needs_input_grad[1:], [dy, *d_final]))
        return (None, *backward(r, saved, lengths, forget, stabilizer, dy, d_final))


def _torch_scan(forget: str, stabilizer: str, lengths, xs, r, *state):
    """:class:`_Scan`'s outputs by :func:`lstmkit.functional.slstm` on torch (a second
    derivative's recomputation, see :mod:`lstmkit.kernels.second_order`)."""
    from lstmkit.functional.slstm import slstm

    y, final = slstm(xs.transpose(0, 1), r, state=sLSTMState(*state), lengths=lengths,
                     return_state=True, forget=forget, stabilizer=stabilizer, backend="torch")
    return (y.transpose(0, 1), *final)


def _flags(forget: str, stabilizer: str, lengths) -> dict:
    return dict(FORGET_EXP=forget == "exp", NXAI=stabilizer == "nxai",
                LENGTHS=lengths is not None)


def scan(xs: torch.Tensor, r: torch.Tensor, state: sLSTMState, lengths: torch.Tensor | None,
         forget: str, stabilizer: str):
    """The sLSTM over a sequence by the Triton kernels, time-major: xs (T, B, 4H) input terms,
    r (NH, DH, 4, DH), state (h, c, n, m) each (B, H), lengths (B,) or None -> (y (T, B, H),
    sLSTMState), in xs's dtype (the state is acc inside)."""
    lens = None if lengths is None else lengths.to(xs.device, torch.int32)
    xs, r, state = xs.contiguous(), r.contiguous(), [s.contiguous() for s in state]
    if through_ops():
        from lstmkit.kernels.triton import ops

        y, *final = ops.slstm_scan(xs, r, state, lens, forget, stabilizer)
    else:
        y, *final = _Scan.apply((forget, stabilizer, lens), xs, r, *state)
    return y, sLSTMState(*final)
