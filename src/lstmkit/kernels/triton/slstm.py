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

import torch
import triton
import triton.language as tl

from lstmkit.cells.slstm import sLSTMState
from lstmkit.kernels.triton import common
from lstmkit.kernels.triton.common import state_ptrs, step_sync, tanh

MAX_HEAD = 256
"""Largest DH: a program holds a head's four gate rows of BB x DH in registers."""


@triton.jit
def _gate_ptrs(BUF, t, rb, ru, B, H):
    """Pointers (BB, BH) to gate i's block of a (T, B, 4H) buffer; add g*H for gate g."""
    return state_ptrs(BUF, t, rb, ru, B, 4 * H)


@triton.jit
def _weight_ptrs(R, head, rin, rout, DH):
    """Pointers (len(rin), len(rout)) to gate i's block R[head, rin, 0, rout] of the
    (NH, DH, 4, DH) recurrent matrix; add g*DH for gate g."""
    return R + ((head * DH + rin).to(tl.int64) * 4)[:, None] * DH + rout[None, :]


@triton.jit
def _weight_t_ptrs(R, head, rout, rin, DH):
    """Pointers (len(rout), len(rin)) to gate i's block of R^T: R[head, rin, 0, rout] at
    [rout, rin]; add g*DH for gate g."""
    return R + ((head * DH + rin).to(tl.int64) * 4)[None, :] * DH + rout[:, None]


@triton.jit
def _log_forget(f, FORGET_EXP: tl.constexpr):
    """log f from f~: log sigmoid(f~) (as torch's logsigmoid: min(x, 0) - log(1 + e^-|x|))."""
    if FORGET_EXP:
        y = f
    else:
        y = tl.minimum(f, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(f)))
    return y


@triton.jit
def _split(x, y):
    """The share of max(x, y)'s gradient that goes to x, as torch.maximum gives it."""
    return tl.where(x > y, 1.0, tl.where(x == y, 0.5, 0.0))


@triton.jit
def _slstm_forward(
    X,  # (T, B, 4H) input terms, blocks i, f, z, o, each head-major
    R,  # (NH, DH, 4, DH) recurrent matrix
    HS, CS, NS, MS,  # (T+1, B, H) acc: states; [0] holds the initial state
    PRE,  # (T, B, 4H) acc: out, pre-activations (SAVE)
    LEN,  # (B,) int32 (LENGTHS)
    COUNT,  # unused: one program per head needs no grid barrier
    T, B, H, DH, s_start, s_stop,
    FORGET_EXP: tl.constexpr, NXAI: tl.constexpr, LENGTHS: tl.constexpr, SAVE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    w_ty = R.dtype.element_ty
    head = tl.program_id(1)
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    rd = tl.arange(0, BLOCK_H)  # (BH,): units of the head
    mb, md = rb < B, rd < DH
    ru = head * DH + rd  # (BH,): units of the layer
    m_bh = mb[:, None] & md[None, :]
    if HOLD:  # the head's whole depth fits one block: keep its four (BK, BH) blocks
        rk = tl.arange(0, BLOCK_K)
        w_ptrs = _weight_ptrs(R, head, rk, rd, DH)
        wmask = (rk < DH)[:, None] & md[None, :]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
    for t in range(s_start, s_stop):
        r_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_z = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, DH, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < DH
            hk = tl.load(state_ptrs(HS, t, rb, head * DH + rk, B, H),
                         mask=mb[:, None] & mk[None, :], other=0.0).to(w_ty)  # (BB, BK)
            if not HOLD:
                w_ptrs = _weight_ptrs(R, head, rk, rd, DH)
                wmask = mk[:, None] & md[None, :]
                w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
                w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
                w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
            r_i = tl.dot(hk, w_i, acc=r_i, input_precision=PRECISION, out_dtype=acc_ty)
            r_f = tl.dot(hk, w_f, acc=r_f, input_precision=PRECISION, out_dtype=acc_ty)
            r_z = tl.dot(hk, w_z, acc=r_z, input_precision=PRECISION, out_dtype=acc_ty)
            r_o = tl.dot(hk, w_o, acc=r_o, input_precision=PRECISION, out_dtype=acc_ty)
        gx = _gate_ptrs(X, t, rb, ru, B, H)
        a_i = r_i + tl.load(gx, mask=m_bh, other=0.0).to(acc_ty)
        a_f = r_f + tl.load(gx + H, mask=m_bh, other=0.0).to(acc_ty)
        a_z = r_z + tl.load(gx + 2 * H, mask=m_bh, other=0.0).to(acc_ty)
        a_o = r_o + tl.load(gx + 3 * H, mask=m_bh, other=0.0).to(acc_ty)
        prev = state_ptrs(0, t, rb, ru, B, H)  # offsets of step t in HS, CS, NS, MS
        c0 = tl.load(CS + prev, mask=m_bh, other=0.0)
        n0 = tl.load(NS + prev, mask=m_bh, other=0.0)
        m0 = tl.load(MS + prev, mask=m_bh, other=0.0)
        logfm = _log_forget(a_f, FORGET_EXP) + m0
        m = tl.maximum(a_i, logfm)
        if NXAI:  # a fresh unit (n = 0) starts its stabiliser at i~; the gates clamp at 1
            m = tl.where(n0 == 0.0, a_i, m)
            i_ = tl.minimum(tl.exp(a_i - m), 1.0)
            f_ = tl.minimum(tl.exp(logfm - m), 1.0)
        else:
            i_ = tl.exp(a_i - m)
            f_ = tl.exp(logfm - m)
        c = f_ * c0 + i_ * tanh(a_z)
        n = f_ * n0 + i_
        h = tl.sigmoid(a_o) * c / n
        if LENGTHS:
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]  # (BB, 1)
            h = tl.where(valid, h, tl.load(HS + prev, mask=m_bh, other=0.0))
            c, n, m = tl.where(valid, c, c0), tl.where(valid, n, n0), tl.where(valid, m, m0)
        if SAVE:
            ptrs = _gate_ptrs(PRE, t, rb, ru, B, H)
            tl.store(ptrs, a_i, mask=m_bh)
            tl.store(ptrs + H, a_f, mask=m_bh)
            tl.store(ptrs + 2 * H, a_z, mask=m_bh)
            tl.store(ptrs + 3 * H, a_o, mask=m_bh)
        new = prev + B * H  # step t + 1
        tl.store(HS + new, h, mask=m_bh)
        tl.store(CS + new, c, mask=m_bh)
        tl.store(NS + new, n, mask=m_bh)
        tl.store(MS + new, m, mask=m_bh)
        step_sync(COUNT, t, 1, SYNC)  # this program's h_t is the next step's operand


@triton.jit
def _slstm_backward(
    DY,  # (T, B, H) gradient of the outputs
    R, HS, CS, NS, MS, PRE, LEN,  # as the forward's
    GS,  # (4, B, H) acc: in, gradients of the final h, c, n, m; out, of the initial state (h's
    #      direct part: the recurrent product's share, DPRE[0] R^T, is added in torch)
    DPRE,  # (T+1, B, 4H) acc: out, gradient of the pre-activations; DPRE[T] is zeros
    COUNT, T, B, H, DH, s_start, s_stop,
    FORGET_EXP: tl.constexpr, NXAI: tl.constexpr, LENGTHS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    w_ty = R.dtype.element_ty
    head = tl.program_id(1)
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rd = tl.arange(0, BLOCK_H)
    mb, md = rb < B, rd < DH
    ru = head * DH + rd
    m_bh = mb[:, None] & md[None, :]
    if HOLD:  # R^T's four (BK, BH) blocks: R[head, rd, g, rk] at [rk, rd]
        rk = tl.arange(0, BLOCK_K)
        w_ptrs = _weight_t_ptrs(R, head, rk, rd, DH)
        wmask = (rk < DH)[:, None] & md[None, :]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + DH, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + 2 * DH, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * DH, mask=wmask, other=0.0)
    grads = GS + rb[:, None] * H + ru[None, :]
    g_h = tl.load(grads, mask=m_bh, other=0.0)
    g_c = tl.load(grads + B * H, mask=m_bh, other=0.0)
    g_n = tl.load(grads + 2 * B * H, mask=m_bh, other=0.0)
    g_m = tl.load(grads + 3 * B * H, mask=m_bh, other=0.0)
    for s in range(s_start, s_stop):
        t = T - 1 - s
        # h_t also fed step t+1's product: dpre_{t+1} R^T (zero at the last step).
        rec = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, DH, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < DH
            dr = _gate_ptrs(DPRE, t + 1, rb, head * DH + rk, B, H)  # (BB, BK)
            dmask = mb[:, None] & mk[None, :]
            if not HOLD:
                w_ptrs = _weight_t_ptrs(R, head, rk, rd, DH)
                wmask = mk[:, None] & md[None, :]
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
        dh = g_h + tl.load(state_ptrs(DY, t, rb, ru, B, H), mask=m_bh, other=0.0).to(acc_ty)
        # Recompute the step from its pre-activations and the previous state.
        ap = _gate_ptrs(PRE, t, rb, ru, B, H)
        a_i = tl.load(ap, mask=m_bh, other=0.0)
        a_f = tl.load(ap + H, mask=m_bh, other=0.0)
        a_z = tl.load(ap + 2 * H, mask=m_bh, other=0.0)
        a_o = tl.load(ap + 3 * H, mask=m_bh, other=0.0)
        prev = state_ptrs(0, t, rb, ru, B, H)  # offsets of step t
        h = tl.load(HS + prev + B * H, mask=m_bh, other=0.0)  # h_t
        c0 = tl.load(CS + prev, mask=m_bh, other=0.0)
        n0 = tl.load(NS + prev, mask=m_bh, other=0.0)
        m0 = tl.load(MS + prev, mask=m_bh, other=0.0)
        a = _log_forget(a_f, FORGET_EXP) + m0
        to_i = _split(a_i, a)
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
            e_i = e_i * _split(1.0, e_i)
            e_f = e_f * _split(1.0, e_f)
        else:
            i_, f_ = e_i, e_f
        zt, ot = tanh(a_z), tl.sigmoid(a_o)
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
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]
            d_i, d_f = tl.where(valid, d_i, 0.0), tl.where(valid, d_f, 0.0)
            d_z, d_o = tl.where(valid, d_z, 0.0), tl.where(valid, d_o, 0.0)
            g_c = tl.where(valid, dc * f_, g_c)
            g_n = tl.where(valid, dn * f_, g_n)
            g_m = tl.where(valid, d_a, g_m)
            g_h = tl.where(valid, 0.0, g_h)
        else:
            g_c, g_n, g_m, g_h = dc * f_, dn * f_, d_a, g_h * 0.0
        dp = _gate_ptrs(DPRE, t, rb, ru, B, H)
        tl.store(dp, d_i, mask=m_bh)
        tl.store(dp + H, d_f, mask=m_bh)
        tl.store(dp + 2 * H, d_z, mask=m_bh)
        tl.store(dp + 3 * H, d_o, mask=m_bh)
        step_sync(COUNT, t, 1, SYNC)
    tl.store(grads, g_h, mask=m_bh)
    tl.store(grads + B * H, g_c, mask=m_bh)
    tl.store(grads + 2 * B * H, g_n, mask=m_bh)
    tl.store(grads + 3 * B * H, g_m, mask=m_bh)


def _plan(batch: int, head: int, device: torch.device) -> common.Plan:
    """One program per batch tile and head, looping over time (never the split-hidden plan: the
    block-diagonal matrix keeps each head in its own program)."""
    return common.plan(4, batch, head, head, device, single=True)


class _Scan(torch.autograd.Function):
    """(xs, r, h0, c0, n0, m0) -> (y, h_T, c_T, n_T, m_T) by the Triton kernels.

    Shapes: xs (T, B, 4H); r (NH, DH, 4, DH); states (B, H); y (T, B, H) zero past each length.
    ``extra`` = (forget, stabilizer, lengths (B,) int32 on the device or None).
    """

    @staticmethod
    def forward(ctx, extra, xs, r, h0, c0, n0, m0):
        forget, stabilizer, lengths = extra
        T, B, G = xs.shape
        NH, DH = r.shape[:2]
        H = G // 4
        acc = common.accumulator(xs.dtype)
        save = any(ctx.needs_input_grad)
        states = [xs.new_empty(T + 1, B, H, dtype=acc) for _ in range(4)]  # h, c, n, m
        for buffer, initial in zip(states, (h0, c0, n0, m0)):
            buffer[0] = initial
        pre = xs.new_empty(T, B, G, dtype=acc) if save else states[1]
        plan = _plan(B, DH, xs.device)
        grid = (triton.cdiv(B, plan.block_b), NH)
        common.launch(_slstm_forward, plan, grid, T, xs, r, *states, pre,
                      states[0] if lengths is None else lengths, states[0], T, B, H, DH,
                      **_flags(extra), SAVE=save, PRECISION=common.precision(xs.dtype))
        ctx.extra = extra
        ctx.save_for_backward(r, pre, *states)
        hs = states[0][1:]
        y = hs if lengths is None else hs * common.valid(lengths, T, acc)
        return (y.to(xs.dtype), *(s[T].to(xs.dtype) for s in states))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, *d_final):
        forget, stabilizer, lengths = ctx.extra
        r, pre, *states = ctx.saved_tensors
        T, B, G = pre.shape
        NH, DH = r.shape[:2]
        H = G // 4
        acc = pre.dtype
        grads = torch.stack([torch.zeros(B, H, dtype=acc, device=pre.device) if d is None
                             else d.to(acc) for d in d_final])  # (4, B, H)
        d_pre = pre.new_empty(T + 1, B, G)  # (T+1, B, 4H); [T] zeros
        d_pre[T] = 0
        dy = torch.zeros_like(states[0][1:]) if dy is None else dy.contiguous()
        plan = _plan(B, DH, pre.device)
        grid = (triton.cdiv(B, plan.block_b), NH)
        common.launch(_slstm_backward, plan, grid, T, dy, r, *states, pre,
                      states[0] if lengths is None else lengths, grads, d_pre, states[0],
                      T, B, H, DH, **_flags(ctx.extra), PRECISION=common.precision(r.dtype))
        d_pre = d_pre[:T]
        heads = d_pre.view(T, B, 4, NH, DH)
        d_h0 = grads[0] + torch.einsum("bgke,kdge->bkd", heads[0], r.to(acc)).reshape(B, H)
        h_prev = states[0][:T].view(T, B, NH, DH)
        d_r = torch.einsum("tbkd,tbgke->kdge", h_prev, heads)  # (NH, DH, 4, DH)
        dtype = r.dtype
        return (None, d_pre.to(dtype), d_r.to(dtype), d_h0.to(dtype),
                *(g.to(dtype) for g in grads[1:]))


def _flags(extra) -> dict:
    forget, stabilizer, lengths = extra
    return dict(FORGET_EXP=forget == "exp", NXAI=stabilizer == "nxai",
                LENGTHS=lengths is not None)


def scan(xs: torch.Tensor, r: torch.Tensor, state: sLSTMState, lengths: torch.Tensor | None,
         forget: str, stabilizer: str):
    """The sLSTM over a sequence by the Triton kernels, time-major: xs (T, B, 4H) input terms,
    r (NH, DH, 4, DH), state (h, c, n, m) each (B, H), lengths (B,) or None -> (y (T, B, H),
    sLSTMState), in xs's dtype (the state is acc inside)."""
    lens = None if lengths is None else lengths.to(xs.device, torch.int32)
    y, *final = _Scan.apply((forget, stabilizer, lens), xs.contiguous(), r.contiguous(),
                            *(s.contiguous() for s in state))
    return y, sLSTMState(*final)
