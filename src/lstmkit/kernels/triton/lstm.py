r"""Triton kernels of the LSTM recurrence, forward and backward (equations: lstmkit.cells.lstm).

Dimensions: B batch, T time, H hidden (cell) units, P units of h (proj_size or H), G = 4 gates
in torch's order i, f, g, o; BB, BH, BK, BP a program's block of batch rows, hidden units, product
depth and h units. Buffers are contiguous, time-major; "acc" is float32 (float64 for float64).

The input term of every step, W_ih x_t + b_ih, is one matrix product in torch
(:func:`~lstmkit.cells.lstm.lstm_input`). The forward kernel does what must go step by step: the
recurrent product r = (m ⊙ h_{t-1}) W_hh^T, the gate math, the state update with zoneout and
lengths. It saves the gate pre-activations a; the backward kernel runs the steps in reverse from
them and yields da (the input term's gradient) and dr (the recurrent product's); the weight
gradients are then whole-sequence products in torch: dW_hh = Σ_t dr_t^T (m ⊙ h_{t-1}) is one.

A program owns BB batch rows and BH hidden units (its four gates' rows of W_hh). Layer norm and
the projection mix all hidden units of a step, so with them one program owns all of H.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lstmkit._transforms import through_ops
from lstmkit.cells.lstm import FAMILY, LN_EPS, LSTMState, lstm_input
from lstmkit.cells.lstm import LSTMConfig as CellConfig
from lstmkit.kernels import second_order
from lstmkit.kernels.triton import common
from lstmkit.kernels.triton.common import (
    act,
    act_grad,
    clamp,
    clamp_grad,
    row,
    state_ptrs,
    step_sync,
)

_EPS = tl.constexpr(LN_EPS)


@triton.jit
def _gate_ptrs(BUF, t, rb, rh, B, H):
    """Pointers (BB, BH) to gate i's block of a (T, B, 4H) buffer; add g*H for gate g."""
    return state_ptrs(BUF, t, rb, rh, B, 4 * H)


@triton.jit
def _lstm_forward(
    GX,  # (T, B, 4H) input term
    HS, CS,  # (T+1, B, P) x's dtype, (T+1, B, H) acc: states; [0] holds the initial state
    A,  # (T, B, 4H) acc: gate pre-activations (peephole terms in, before the clip)
    XR, RSTD,  # (T, B, 4H), (T, B) acc: normalised recurrent term and its 1/std (LAYER_NORM)
    CN, HN,  # (T, B, H) acc: c_t before zoneout (ZONEOUT); o ⊙ ψ(c_t) before W_hr (PROJ,
    #          saved and the projection's operand)
    W, BHH,  # (4H, P), (4H,)
    PEEP,  # (3H,) peepholes i, f, o
    GLN, GC, BC,  # (4H,), (H,), (H,): layer-norm gains of the recurrent term and of c; c's bias
    WHR,  # (P, H)
    DROP,  # (B, P) recurrent dropout mask on h_{t-1}
    ZH, ZC,  # (T, B, P), (T, B, H): zoneout weights of the previous h and c
    LEN,  # (B,) int32
    COUNT,  # (cdiv(B, BB), T) int32 zeros: grid-barrier arrivals
    T, B, H, P, clip, s_start, s_stop,
    HAS_BIAS: tl.constexpr, PEEPHOLE: tl.constexpr, COUPLED: tl.constexpr, CLIP: tl.constexpr,
    GATE_ACT: tl.constexpr, CELL_ACT: tl.constexpr, OUT_ACT: tl.constexpr,
    LAYER_NORM: tl.constexpr, PROJ: tl.constexpr, DROPOUT: tl.constexpr, ZONEOUT: tl.constexpr,
    LENGTHS: tl.constexpr, SAVE: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    pid_b = tl.program_id(0)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # (BH,)
    mb, mh = rb < B, rh < H
    m_bh = mb[:, None] & mh[None, :]  # (BB, BH)
    if PROJ:  # h has its own units, all in this program
        ro = tl.arange(0, BLOCK_P)  # (BP,)
    else:
        ro = rh
    m_bo = mb[:, None] & (ro < P)[None, :]  # (BB, BP) or (BB, BH)
    if HAS_BIAS:  # (1, BH) rows of the parameter vectors, loaded once
        b_i, b_f = row(BHH, rh, mh, acc_ty), row(BHH, H + rh, mh, acc_ty)
        b_g, b_o = row(BHH, 2 * H + rh, mh, acc_ty), row(BHH, 3 * H + rh, mh, acc_ty)
    if PEEPHOLE:
        p_i, p_f = row(PEEP, rh, mh, acc_ty), row(PEEP, H + rh, mh, acc_ty)
        p_o = row(PEEP, 2 * H + rh, mh, acc_ty)
    if LAYER_NORM:
        ln_i, ln_f = row(GLN, rh, mh, acc_ty), row(GLN, H + rh, mh, acc_ty)
        ln_g, ln_o = row(GLN, 2 * H + rh, mh, acc_ty), row(GLN, 3 * H + rh, mh, acc_ty)
        ln_c, ln_b = row(GC, rh, mh, acc_ty), row(BC, rh, mh, acc_ty)
    if HOLD:  # the whole product depth fits one block: keep W_hh^T's four (BK, BH) blocks
        rk = tl.arange(0, BLOCK_K)
        wmask = (rk < P)[:, None] & mh[None, :]
        w_ptrs = W + rh[None, :].to(tl.int64) * P + rk[:, None]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + H * P, mask=wmask, other=0.0)
        w_g = tl.load(w_ptrs + 2 * H * P, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * H * P, mask=wmask, other=0.0)
    for t in range(s_start, s_stop):
        r_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        r_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, P, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < P
            hk = tl.load(state_ptrs(HS, t, rb, rk, B, P), mask=mb[:, None] & mk[None, :],
                         other=0.0, cache_modifier=".cg")  # (BB, BK): other programs wrote it
            if DROPOUT:
                hk = hk * tl.load(DROP + rb[:, None] * P + rk[None, :],
                                  mask=mb[:, None] & mk[None, :], other=0.0)
            if not HOLD:
                wmask = mk[:, None] & mh[None, :]
                w_ptrs = W + rh[None, :].to(tl.int64) * P + rk[:, None]
                w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_f = tl.load(w_ptrs + H * P, mask=wmask, other=0.0)
                w_g = tl.load(w_ptrs + 2 * H * P, mask=wmask, other=0.0)
                w_o = tl.load(w_ptrs + 3 * H * P, mask=wmask, other=0.0)
            r_i = tl.dot(hk, w_i, acc=r_i, input_precision=PRECISION, out_dtype=acc_ty)
            r_f = tl.dot(hk, w_f, acc=r_f, input_precision=PRECISION, out_dtype=acc_ty)
            r_g = tl.dot(hk, w_g, acc=r_g, input_precision=PRECISION, out_dtype=acc_ty)
            r_o = tl.dot(hk, w_o, acc=r_o, input_precision=PRECISION, out_dtype=acc_ty)
        if LAYER_NORM:  # over all 4H units of the step, which this program holds
            n4 = 4.0 * H
            mean = tl.sum(tl.where(m_bh, r_i + r_f + r_g + r_o, 0.0), axis=1) / n4  # (BB,)
            d_i = tl.where(m_bh, r_i - mean[:, None], 0.0)
            d_f = tl.where(m_bh, r_f - mean[:, None], 0.0)
            d_g = tl.where(m_bh, r_g - mean[:, None], 0.0)
            d_o = tl.where(m_bh, r_o - mean[:, None], 0.0)
            var = tl.sum(d_i * d_i + d_f * d_f + d_g * d_g + d_o * d_o, axis=1) / n4
            rstd = 1.0 / tl.sqrt(var + _EPS)  # (BB,)
            r_i, r_f = d_i * rstd[:, None], d_f * rstd[:, None]
            r_g, r_o = d_g * rstd[:, None], d_o * rstd[:, None]
            if SAVE:
                ptrs = _gate_ptrs(XR, t, rb, rh, B, H)
                tl.store(ptrs, r_i, mask=m_bh)
                tl.store(ptrs + H, r_f, mask=m_bh)
                tl.store(ptrs + 2 * H, r_g, mask=m_bh)
                tl.store(ptrs + 3 * H, r_o, mask=m_bh)
                tl.store(RSTD + t * B + rb, rstd, mask=mb)
            r_i, r_f, r_g, r_o = r_i * ln_i, r_f * ln_f, r_g * ln_g, r_o * ln_o
        gx = _gate_ptrs(GX, t, rb, rh, B, H)
        a_i = r_i + tl.load(gx, mask=m_bh, other=0.0).to(acc_ty)
        a_f = r_f + tl.load(gx + H, mask=m_bh, other=0.0).to(acc_ty)
        a_g = r_g + tl.load(gx + 2 * H, mask=m_bh, other=0.0).to(acc_ty)
        a_o = r_o + tl.load(gx + 3 * H, mask=m_bh, other=0.0).to(acc_ty)
        if HAS_BIAS:
            a_i, a_f, a_g, a_o = a_i + b_i, a_f + b_f, a_g + b_g, a_o + b_o
        c_prev = tl.load(state_ptrs(CS, t, rb, rh, B, H), mask=m_bh, other=0.0)  # (BB, BH)
        if PEEPHOLE:
            a_i += p_i * c_prev
            a_f += p_f * c_prev
        i = act(clamp(a_i, clip, CLIP), GATE_ACT)
        if COUPLED:
            f = 1.0 - i
        else:
            f = act(clamp(a_f, clip, CLIP), GATE_ACT)
        c_new = f * c_prev + i * act(clamp(a_g, clip, CLIP), CELL_ACT)
        if PEEPHOLE:
            a_o += p_o * c_new
        o = act(clamp(a_o, clip, CLIP), GATE_ACT)
        c_out = c_new
        if LAYER_NORM:
            c_out = _normalise(c_new, m_bh, H)[0] * ln_c + ln_b
        h_new = o * act(c_out, OUT_ACT)  # (BB, BH)
        if PROJ:  # h_new W_hr^T in chunks of depth, read back from HN
            tl.store(state_ptrs(HN, t, rb, rh, B, H), h_new, mask=m_bh)
            tl.debug_barrier()
            h_new = _project(HN, WHR, t, rb, mb, ro, B, H, P, BLOCK_B, BLOCK_P, BLOCK_K,
                             PRECISION)
        h_prev = tl.load(state_ptrs(HS, t, rb, ro, B, P), mask=m_bo, other=0.0,
                         cache_modifier=".cg").to(acc_ty)
        if ZONEOUT:
            if SAVE:
                tl.store(state_ptrs(CN, t, rb, rh, B, H), c_new, mask=m_bh)
            z_h = tl.load(state_ptrs(ZH, t, rb, ro, B, P), mask=m_bo, other=0.0).to(acc_ty)
            z_c = tl.load(state_ptrs(ZC, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
            h_new = z_h * h_prev + (1.0 - z_h) * h_new
            c_new = z_c * c_prev + (1.0 - z_c) * c_new
        if LENGTHS:
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]  # (BB, 1)
            h_new = tl.where(valid, h_new, h_prev)
            c_new = tl.where(valid, c_new, c_prev)
        if SAVE:
            ptrs = _gate_ptrs(A, t, rb, rh, B, H)
            tl.store(ptrs, a_i, mask=m_bh)
            tl.store(ptrs + H, a_f, mask=m_bh)
            tl.store(ptrs + 2 * H, a_g, mask=m_bh)
            tl.store(ptrs + 3 * H, a_o, mask=m_bh)
        tl.store(state_ptrs(HS, t + 1, rb, ro, B, P), h_new.to(HS.dtype.element_ty), mask=m_bo)
        tl.store(state_ptrs(CS, t + 1, rb, rh, B, H), c_new, mask=m_bh)
        step_sync(COUNT, pid_b * T + t, tl.num_programs(1), SYNC)


@triton.jit
def _project(HN, WHR, t, rb, mb, ro, B, H, P, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
             BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """HN[t] W_hr^T: (BB, H) x (H, P) -> (BB, BP), over H in chunks of BK."""
    out = tl.zeros((BLOCK_B, BLOCK_P), dtype=HN.dtype.element_ty)
    for k0 in range(0, H, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < H
        hk = tl.load(state_ptrs(HN, t, rb, rk, B, H), mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(WHR + ro[None, :] * H + rk[:, None], mask=mk[:, None] & (ro < P)[None, :],
                    other=0.0)  # (BK, BP) = W_hr^T's block
        out = tl.dot(hk.to(w.dtype), w, acc=out, input_precision=PRECISION,
                     out_dtype=HN.dtype.element_ty)
    return out


@triton.jit
def _unproject(DHP, WHR, t, rb, mb, rh, mh, B, H, P, BLOCK_B: tl.constexpr,
               BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """DHP[t] W_hr: (BB, P) x (P, H) -> (BB, BH), over P in chunks of BK."""
    out = tl.zeros((BLOCK_B, BLOCK_H), dtype=DHP.dtype.element_ty)
    for k0 in range(0, P, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < P
        dk = tl.load(state_ptrs(DHP, t, rb, rk, B, P), mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(WHR + rk[:, None] * H + rh[None, :], mask=mk[:, None] & mh[None, :],
                    other=0.0)  # (BK, BH)
        out = tl.dot(dk.to(w.dtype), w, acc=out, input_precision=PRECISION,
                     out_dtype=DHP.dtype.element_ty)
    return out


@triton.jit
def _normalise(x, mask, n):
    """((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps)) over each row's ``n`` masked units."""
    mean = tl.sum(tl.where(mask, x, 0.0), axis=1) / n
    d = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / n + _EPS)
    return d * rstd[:, None], rstd


@triton.jit
def _normalise_grad(dxhat, xhat, rstd, mask, n):
    """The gradient of layer norm's input from that of its normalised output, per row."""
    mean_d = tl.sum(tl.where(mask, dxhat, 0.0), axis=1) / n
    mean_dx = tl.sum(tl.where(mask, dxhat * xhat, 0.0), axis=1) / n
    return tl.where(mask, rstd[:, None] * (dxhat - mean_d[:, None] - xhat * mean_dx[:, None]), 0.0)


@triton.jit
def _lstm_backward(
    DY,  # (T, B, P) gradient of the outputs
    GH, GCS,  # (B, P), (B, H) acc: in, gradients of the final h, c; out, of the initial state
    #           (their direct part: the recurrent product's share is dr_0 W_hh, added in torch)
    HS, CS, A, XR, RSTD,  # saved by the forward
    W, PEEP, GLN, GC, BC, WHR, DROP, ZH, ZC, LEN,  # as the forward's
    DA,  # (T, B, 4H) acc: out, gradient of the gate pre-activations a (= of the input term)
    DR,  # (T+1, B, 4H) acc: out, gradient of the recurrent product r; DR[T] is zeros. DA's
    #      memory unless LAYER_NORM
    DHP,  # (T, B, P) acc: out, gradient of W_hr's output (PROJ)
    DCO,  # (T, B, H) acc: out, gradient of LN(c_t) (LAYER_NORM)
    COUNT,  # (cdiv(B, BB), T) int32 zeros
    T, B, H, P, clip, s_start, s_stop,
    PEEPHOLE: tl.constexpr, COUPLED: tl.constexpr, CLIP: tl.constexpr,
    GATE_ACT: tl.constexpr, CELL_ACT: tl.constexpr, OUT_ACT: tl.constexpr,
    LAYER_NORM: tl.constexpr, PROJ: tl.constexpr, DROPOUT: tl.constexpr, ZONEOUT: tl.constexpr,
    LENGTHS: tl.constexpr, BLOCK_P: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = CS.dtype.element_ty
    w_ty = W.dtype.element_ty
    pid_b = tl.program_id(0)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # (BH,)
    mb, mh = rb < B, rh < H
    m_bh = mb[:, None] & mh[None, :]
    if PROJ:
        ro = tl.arange(0, BLOCK_P)
    else:
        ro = rh
    mo = ro < P
    m_bo = mb[:, None] & mo[None, :]
    if PEEPHOLE:  # (1, BH) rows of the parameter vectors, loaded once
        p_i, p_f = row(PEEP, rh, mh, acc_ty), row(PEEP, H + rh, mh, acc_ty)
        p_o = row(PEEP, 2 * H + rh, mh, acc_ty)
    if LAYER_NORM:
        ln_i, ln_f = row(GLN, rh, mh, acc_ty), row(GLN, H + rh, mh, acc_ty)
        ln_g, ln_o = row(GLN, 2 * H + rh, mh, acc_ty), row(GLN, 3 * H + rh, mh, acc_ty)
        ln_c, ln_b = row(GC, rh, mh, acc_ty), row(BC, rh, mh, acc_ty)
    if HOLD:  # W_hh's four (BK, BO) blocks over the whole depth H
        rk = tl.arange(0, BLOCK_K)
        wmask = (rk < H)[:, None] & mo[None, :]
        w_ptrs = W + rk[:, None].to(tl.int64) * P + ro[None, :]
        w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_f = tl.load(w_ptrs + H * P, mask=wmask, other=0.0)
        w_g = tl.load(w_ptrs + 2 * H * P, mask=wmask, other=0.0)
        w_o = tl.load(w_ptrs + 3 * H * P, mask=wmask, other=0.0)
    if DROPOUT:
        keep = tl.load(DROP + rb[:, None] * P + ro[None, :], mask=m_bo, other=0.0).to(acc_ty)
    g_h = tl.load(GH + rb[:, None] * P + ro[None, :], mask=m_bo, other=0.0)  # (BB, BO)
    g_c = tl.load(GCS + rb[:, None] * H + rh[None, :], mask=m_bh, other=0.0)  # (BB, BH)
    for s in range(s_start, s_stop):
        t = T - 1 - s
        # h_t also fed step t+1's product: dr_{t+1} W_hh (zero at the last step).
        rec = tl.zeros((BLOCK_B, BLOCK_P if PROJ else BLOCK_H), dtype=acc_ty)
        for k0 in range(0, H, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < H
            dr = _gate_ptrs(DR, t + 1, rb, rk, B, H)  # (BB, BK)
            dmask = mb[:, None] & mk[None, :]
            if not HOLD:
                wmask = mk[:, None] & mo[None, :]
                w_ptrs = W + rk[:, None].to(tl.int64) * P + ro[None, :]
                w_i = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_f = tl.load(w_ptrs + H * P, mask=wmask, other=0.0)
                w_g = tl.load(w_ptrs + 2 * H * P, mask=wmask, other=0.0)
                w_o = tl.load(w_ptrs + 3 * H * P, mask=wmask, other=0.0)
            for_i = tl.load(dr, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(for_i, w_i, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
            for_f = tl.load(dr + H, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(for_f, w_f, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
            for_g = tl.load(dr + 2 * H, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(for_g, w_g, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
            for_o = tl.load(dr + 3 * H, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(for_o, w_o, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
        if DROPOUT:
            rec = rec * keep
        g_h += rec
        # Through the output, the length mask and zoneout to this step's new h and c.
        d_h = g_h + tl.load(state_ptrs(DY, t, rb, ro, B, P), mask=m_bo, other=0.0).to(acc_ty)
        d_c = g_c
        if LENGTHS:
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]  # (BB, 1)
            d_h = tl.where(valid, d_h, 0.0)
            g_h = tl.where(valid, 0.0, g_h)
            d_c = tl.where(valid, d_c, 0.0)
            g_c = tl.where(valid, 0.0, g_c)
        else:
            g_h = g_h * 0.0
            g_c = g_c * 0.0
        if ZONEOUT:
            z_h = tl.load(state_ptrs(ZH, t, rb, ro, B, P), mask=m_bo, other=0.0).to(acc_ty)
            z_c = tl.load(state_ptrs(ZC, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
            g_h += z_h * d_h
            g_c += z_c * d_c
            d_h = (1.0 - z_h) * d_h
            d_c = (1.0 - z_c) * d_c
        if PROJ:
            tl.store(state_ptrs(DHP, t, rb, ro, B, P), d_h, mask=m_bo)
            tl.debug_barrier()
            d_h = _unproject(DHP, WHR, t, rb, mb, rh, mh, B, H, P, BLOCK_B, BLOCK_H, BLOCK_K,
                             PRECISION)
        # Recompute the step's gates from the saved pre-activations.
        ap = _gate_ptrs(A, t, rb, rh, B, H)
        a_i = tl.load(ap, mask=m_bh, other=0.0)
        a_f = tl.load(ap + H, mask=m_bh, other=0.0)
        a_g = tl.load(ap + 2 * H, mask=m_bh, other=0.0)
        a_o = tl.load(ap + 3 * H, mask=m_bh, other=0.0)
        c_prev = tl.load(state_ptrs(CS, t, rb, rh, B, H), mask=m_bh, other=0.0)
        i = act(clamp(a_i, clip, CLIP), GATE_ACT)
        if COUPLED:
            f = 1.0 - i
        else:
            f = act(clamp(a_f, clip, CLIP), GATE_ACT)
        g = act(clamp(a_g, clip, CLIP), CELL_ACT)
        o = act(clamp(a_o, clip, CLIP), GATE_ACT)
        c_new = f * c_prev + i * g
        c_out = c_new
        if LAYER_NORM:
            xhat, rstd = _normalise(c_new, m_bh, H)
            c_out = xhat * ln_c + ln_b
        d_cout = d_h * o * act_grad(c_out, OUT_ACT)
        if LAYER_NORM:
            tl.store(state_ptrs(DCO, t, rb, rh, B, H), d_cout, mask=m_bh)
            d_c += _normalise_grad(d_cout * ln_c, xhat, rstd, m_bh, H)
        else:
            d_c += d_cout
        da_o = d_h * act(c_out, OUT_ACT) * _gate_grad(a_o, clip, CLIP, GATE_ACT)
        if PEEPHOLE:
            d_c += da_o * p_o
        g_c += d_c * f
        d_i = d_c * g
        d_f = d_c * c_prev
        if COUPLED:
            d_i -= d_f
            da_f = d_f * 0.0
        else:
            da_f = d_f * _gate_grad(a_f, clip, CLIP, GATE_ACT)
        da_i = d_i * _gate_grad(a_i, clip, CLIP, GATE_ACT)
        da_g = d_c * i * _gate_grad(a_g, clip, CLIP, CELL_ACT)
        if PEEPHOLE:
            g_c += da_i * p_i + da_f * p_f
        dp = _gate_ptrs(DA, t, rb, rh, B, H)
        tl.store(dp, da_i, mask=m_bh)
        tl.store(dp + H, da_f, mask=m_bh)
        tl.store(dp + 2 * H, da_g, mask=m_bh)
        tl.store(dp + 3 * H, da_o, mask=m_bh)
        if LAYER_NORM:  # r's layer norm spans the four gates
            _gate_norm_grad(XR, RSTD, DR, t, rb, rh, mb, m_bh, B, H, da_i, da_f, da_g, da_o,
                            ln_i, ln_f, ln_g, ln_o)
        step_sync(COUNT, pid_b * T + t, tl.num_programs(1), SYNC)
    tl.store(GH + rb[:, None] * P + ro[None, :], g_h, mask=m_bo)
    tl.store(GCS + rb[:, None] * H + rh[None, :], g_c, mask=m_bh)


@triton.jit
def _gate_grad(a, clip, CLIP: tl.constexpr, KIND: tl.constexpr):
    """d act(clamp(a)) / da."""
    return act_grad(clamp(a, clip, CLIP), KIND) * clamp_grad(a, clip, CLIP)


@triton.jit
def _gate_norm_grad(XR, RSTD, DR, t, rb, rh, mb, m_bh, B, H, da_i, da_f, da_g, da_o, ln_i, ln_f,
                    ln_g, ln_o):
    """dr_t from da_t through LN(r; γ_hh) over the 4H units of each row; stores DR[t]."""
    xp = _gate_ptrs(XR, t, rb, rh, B, H)
    x_i = tl.load(xp, mask=m_bh, other=0.0)
    x_f = tl.load(xp + H, mask=m_bh, other=0.0)
    x_g = tl.load(xp + 2 * H, mask=m_bh, other=0.0)
    x_o = tl.load(xp + 3 * H, mask=m_bh, other=0.0)
    rstd = tl.load(RSTD + t * B + rb, mask=mb, other=0.0)[:, None]  # (BB, 1)
    dx_i, dx_f = tl.where(m_bh, da_i * ln_i, 0.0), tl.where(m_bh, da_f * ln_f, 0.0)
    dx_g, dx_o = tl.where(m_bh, da_g * ln_g, 0.0), tl.where(m_bh, da_o * ln_o, 0.0)
    n4 = 4.0 * H
    mean_d = (tl.sum(dx_i + dx_f + dx_g + dx_o, axis=1) / n4)[:, None]
    mean_dx = (tl.sum(dx_i * x_i + dx_f * x_f + dx_g * x_g + dx_o * x_o, axis=1) / n4)[:, None]
    dp = _gate_ptrs(DR, t, rb, rh, B, H)
    tl.store(dp, rstd * (dx_i - mean_d - x_i * mean_dx), mask=m_bh)
    tl.store(dp + H, rstd * (dx_f - mean_d - x_f * mean_dx), mask=m_bh)
    tl.store(dp + 2 * H, rstd * (dx_g - mean_d - x_g * mean_dx), mask=m_bh)
    tl.store(dp + 3 * H, rstd * (dx_o - mean_d - x_o * mean_dx), mask=m_bh)

def _flags(cfg: CellConfig) -> dict:
    """The forward's and backward's shared constexprs for ``cfg``."""
    return dict(PEEPHOLE=cfg.peephole, COUPLED=cfg.coupled, CLIP=cfg.cell_clip is not None,
                GATE_ACT=common.ACT_CODES[cfg.gate_activation],
                CELL_ACT=common.ACT_CODES[cfg.cell_activation],
                OUT_ACT=common.ACT_CODES[cfg.output_activation],
                LAYER_NORM=cfg.layer_norm, PROJ=bool(cfg.proj_size),
                BLOCK_P=common.pad(cfg.output_size))


WEIGHTS = ("weight_hh", "bias_hh", "weight_peephole", "weight_ln_hh", "weight_ln_c", "bias_ln_c",
           "weight_hr")
"""The recurrence's parameters, in the order :func:`forward` and :func:`backward` take them."""


def forward(cfg: CellConfig, gx, state, w: dict, drop, zoneout, lengths, save: bool):
    """The forward kernel over one layer and direction: (y, [h_T, c_T], saved), saved
    (hs, cs, a, xr, rstd, cn, hn) being what :func:`backward` reads; with ``save`` False, or
    where an option is off, an entry is a stand-in (another buffer) the kernel ignores.

    Shapes: gx (T, B, 4H); h0 (B, P); c0 (B, H); drop (B, P) or None; zoneout None or
    [z_h (T, B, P), z_c (T, B, H)]; lengths (B,) int32 or None -> y (T, B, P).
    """
    h0, c0 = state
    z_h, z_c = (None, None) if zoneout is None else zoneout
    w_hh, b_hh, peep, ln_hh, ln_c_w, ln_c_b, w_hr = (w.get(name) for name in WEIGHTS)
    steps, batch, _ = gx.shape
    hidden, out = cfg.hidden_size, cfg.output_size
    acc = common.accumulator(gx.dtype)

    def buffer(*shape, on=True):  # a saved intermediate, or a stand-in the kernel ignores
        return gx.new_empty(shape, dtype=acc) if on else cs

    hs = gx.new_empty(steps + 1, batch, out)  # (T+1, B, P)
    hs[0] = h0
    cs = gx.new_empty(steps + 1, batch, hidden, dtype=acc)  # (T+1, B, H)
    cs[0] = c0
    a = buffer(steps, batch, 4 * hidden, on=save)
    xr = buffer(steps, batch, 4 * hidden, on=save and cfg.layer_norm)
    rstd = buffer(steps, batch, on=save and cfg.layer_norm)
    cn = buffer(steps, batch, hidden, on=save and z_c is not None)
    hn = buffer(steps, batch, hidden, on=bool(cfg.proj_size))
    plan = plans(cfg, batch, gx.device)[0]
    grid = plan.grid(batch, hidden)
    assert grid[1] == 1 or not (cfg.layer_norm or cfg.proj_size), "needs one hidden tile"
    common.launch(
        _lstm_forward, plan, grid, steps,
        gx, hs, cs, a, xr, rstd, cn, hn, w_hh, *_or(cs, b_hh, peep, ln_hh, ln_c_w, ln_c_b,
                                                    w_hr, drop, z_h, z_c, lengths),
        common.counters(plan, grid, steps, gx.device),
        steps, batch, hidden, out, float(cfg.cell_clip or 0.0),
        HAS_BIAS=b_hh is not None, DROPOUT=drop is not None, ZONEOUT=z_h is not None,
        LENGTHS=lengths is not None, SAVE=save, PRECISION=common.precision(gx.dtype),
        **_flags(cfg))
    y = hs[1:] if lengths is None else hs[1:] * common.valid(lengths, steps, hs.dtype)
    return y, [hs[steps].clone(), cs[steps].to(gx.dtype, copy=True)], [hs, cs, a, xr, rstd, cn, hn]


def backward(cfg: CellConfig, saved, w: dict, drop, zoneout, lengths, grads, needs=None):
    """The gradients [d gx, d h0, d c0, *d w (in :data:`WEIGHTS` order, None where absent or
    not in ``needs``, a bool per weight)] from those of [y, h_T, c_T] (``grads``) and what
    :func:`forward` saved."""
    hs, cs, a, xr, rstd, cn, hn = saved
    dy, dh, dc = grads
    z_h, z_c = (None, None) if zoneout is None else zoneout
    weights = [w.get(name) for name in WEIGHTS]
    needs = [t is not None for t in weights] if needs is None else needs
    w_hh, _, peep, ln_hh, ln_c_w, ln_c_b, w_hr = weights
    steps, batch, hidden = a.shape[0], a.shape[1], cfg.hidden_size
    acc = a.dtype
    # Copies: the kernel turns them into the initial state's gradients in place.
    g_h = dh.to(acc, memory_format=torch.contiguous_format, copy=True)  # (B, P)
    g_c = dc.to(acc, memory_format=torch.contiguous_format, copy=True)  # (B, H)
    dr = a.new_empty(steps + 1, batch, 4 * hidden)  # (T+1, B, 4H); [T] zeros
    dr[steps] = 0
    da = a.new_empty(a.shape) if cfg.layer_norm else dr[:steps]  # (T, B, 4H)
    dhp = a.new_empty(steps, batch, cfg.output_size) if cfg.proj_size else a
    dco = a.new_empty(steps, batch, hidden) if cfg.layer_norm else a
    plan = plans(cfg, batch, a.device)[1]
    grid = plan.grid(batch, hidden)
    common.launch(
        _lstm_backward, plan, grid, steps,
        dy.contiguous(), g_h, g_c, hs, cs, a, xr, rstd, w_hh,
        *_or(a, peep, ln_hh, ln_c_w, ln_c_b, w_hr, drop, z_h, z_c, lengths),
        da, dr, dhp, dco, common.counters(plan, grid, steps, a.device),
        steps, batch, hidden, cfg.output_size, float(cfg.cell_clip or 0.0),
        DROPOUT=drop is not None, ZONEOUT=z_h is not None, LENGTHS=lengths is not None,
        PRECISION=common.precision(hs.dtype), **_flags(cfg))
    c_new = cs[1:] if z_c is None else cn  # (T, B, H): c_t before zoneout
    weight_grads = _weight_grads(needs, hs, cs, c_new, hn, xr, da, dr, dhp, dco, drop)
    dtype = hs.dtype
    d_h0 = g_h + (dr[0].to(dtype) @ w_hh).to(acc) * (1.0 if drop is None else drop)
    return [da.to(dtype), d_h0.to(dtype), g_c.to(dtype), *weight_grads]


class _LSTMScan(torch.autograd.Function):
    """One layer, one direction: (gx, h0, c0, weights) -> (y, h_T, c_T) by :func:`forward` and
    :func:`backward`. ``extra`` holds what is not differentiated: the config, the step masks,
    the lengths, and the input term's recomputation from x (for a second derivative, which
    :func:`common.reference_gradients` takes through the reference: gx is not kept, x is
    kept by the input product's own backward)."""

    @staticmethod
    def forward(ctx, extra, gx, h0, c0, *weights):
        cfg, drop, zoneout, lengths, _ = extra
        y, final, saved = forward(cfg, gx, [h0, c0], dict(zip(WEIGHTS, weights)), drop,
                                  zoneout, lengths, save=any(ctx.needs_input_grad))
        ctx.extra = extra
        ctx.save_for_backward(*saved, *weights, h0, c0)
        return y, *final

    @staticmethod
    def backward(ctx, dy, dh, dc):
        cfg, drop, zoneout, lengths, input_term = ctx.extra
        saved, weights, state = (ctx.saved_tensors[:7], ctx.saved_tensors[7:-2],
                                 ctx.saved_tensors[-2:])
        if second_order.wants_graph():
            return (None, *common.reference_gradients(
                FAMILY, cfg, WEIGHTS, drop, zoneout, lengths, input_term(), state, weights,
                ctx.needs_input_grad[1:], [dy, dh, dc]))
        grads = backward(cfg, saved, dict(zip(WEIGHTS, weights)), drop, zoneout, lengths,
                         [dy, dh, dc], needs=ctx.needs_input_grad[4:])
        return (None, *grads)


def _weight_grads(needs, hs, cs, c_new, hn, xr, da, dr, dhp, dco, drop):
    """Gradients of w_hh, b_hh, peep, ln_hh, ln_c_w, ln_c_b, w_hr: sums over all steps at once."""
    dtype, steps = hs.dtype, da.shape[0]
    flat = lambda v: v.flatten(0, 1)  # noqa: E731  (T, B, X) -> (T*B, X)
    grads = [None] * 7
    hd = hs[:-1] if drop is None else hs[:-1] * drop  # (T, B, P): what W_hh multiplied
    if needs[0]:
        grads[0] = flat(dr[:steps]).t().to(dtype) @ flat(hd)  # (4H, P)
    if needs[1]:
        grads[1] = da.sum((0, 1)).to(dtype)
    if needs[2]:
        d_i, d_f, _, d_o = da.chunk(4, dim=-1)
        grads[2] = torch.cat([(d_i * cs[:-1]).sum((0, 1)), (d_f * cs[:-1]).sum((0, 1)),
                              (d_o * c_new).sum((0, 1))]).to(dtype)
    if needs[3]:
        grads[3] = (da * xr).sum((0, 1)).to(dtype)
    if needs[4]:
        xhat = torch.nn.functional.layer_norm(c_new, c_new.shape[-1:], eps=LN_EPS)
        grads[4] = (dco * xhat).sum((0, 1)).to(dtype)
    if needs[5]:
        grads[5] = dco.sum((0, 1)).to(dtype)
    if needs[6]:
        grads[6] = (flat(dhp).t() @ flat(hn)).to(dtype)  # (P, H)
    return grads


def _or(stand_in, *tensors):
    """The tensors, with ``stand_in`` for each None (the kernel's flags say which are unused)."""
    return [stand_in if t is None else t for t in tensors]


def plans(cfg: CellConfig, batch: int, device: torch.device):
    """The forward and backward launch plans: layer norm and the projection need all hidden
    units in one program; the backward's product runs over H instead of P."""
    single = cfg.layer_norm or bool(cfg.proj_size)
    hidden = cfg.hidden_size
    return (common.plan(4, batch, hidden, cfg.output_size, device, single),
            common.plan(4, batch, hidden, hidden, device, single))


def scan(cfg: CellConfig, w, x, state, lengths, masks):
    """One LSTM layer in one direction (the backend's scan, see lstmkit.kernels.reference).

    Shape: x (T, B, I); state h (B, P), c (B, H); lengths (B,) or None -> y (T, B, P), state.
    """
    gx = lstm_input(x, w, cfg).contiguous()  # (T, B, 4H): every step's input term at once
    drop = None if masks.hidden is None else masks.hidden.contiguous()  # (B, P)
    zoneout = None if masks.zoneout is None else [z.contiguous() for z in masks.zoneout]
    lens = None if lengths is None else lengths.to(x.device, torch.int32)
    state = [t.contiguous() for t in state]
    weights = [None if w.get(name) is None else w[name].contiguous() for name in WEIGHTS]
    if through_ops():
        from lstmkit.kernels.triton import ops

        y, h, c = ops.scan(cfg, gx, state, dict(zip(WEIGHTS, weights)), drop, zoneout, lens)
    else:
        y, h, c = _LSTMScan.apply((cfg, drop, zoneout, lens, lambda: lstm_input(x, w, cfg)),
                                  gx, *state, *weights)
    return y, LSTMState(h, c)
