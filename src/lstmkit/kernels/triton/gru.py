r"""Triton kernels of the GRU recurrence, forward and backward (equations: lstmkit.cells.gru).

Dimensions: B batch, T time, H hidden units, G = 3 gates in torch's order r, z, n; BB, BH, BK a
program's block of batch rows, hidden units and product depth. Buffers are contiguous,
time-major; "acc" is float32 (float64 for float64).

As for the LSTM (see :mod:`.lstm`), the input term W_i x_t + b_i of every step is one product in
torch, the kernels run the steps, and the weight gradients are whole-sequence products in torch.
With h' = m ⊙ h_{t-1} (m the recurrent-dropout mask), one step is::

    r = σ(x_r + h' W_hr^T + b_hr),  z = σ(x_z + h' W_hz^T + b_hz)
    q = h' W_hn^T + b_hn,  n = tanh(x_n + r ⊙ q)           reset_after (torch.nn)
    q = (r ⊙ h') W_hn^T + b_hn,  n = tanh(x_n + q)         reset-before (Cho et al.)
    h_t = (1 - z) ⊙ n + z ⊙ h'

The reset-before form needs every unit's r before n's product, so it runs in one program per
batch tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lstmkit._transforms import through_ops
from lstmkit.cells.gru import FAMILY, gru_input
from lstmkit.cells.gru import GRUConfig as CellConfig
from lstmkit.kernels import second_order
from lstmkit.kernels.triton import common
from lstmkit.kernels.triton.common import row, state_ptrs, step_sync, tanh


@triton.jit
def _gate_ptrs(BUF, t, rb, rh, B, H, G: tl.constexpr):
    """Pointers (BB, BH) to the first gate's block of a (T, B, G*H) buffer; add g*H for gate g."""
    return state_ptrs(BUF, t, rb, rh, B, G * H)


@triton.jit
def _gru_forward(
    GX,  # (T, B, 3H) input term
    HS,  # (T+1, B, H): states; [0] holds the initial state
    S,  # (T, B, 4H) acc: r, z, n, q of every step, for backward (r also as the reset-before
    #     product's operand)
    W, BHH,  # (3H, H), (3H,)
    DROP,  # (B, H) recurrent dropout mask on h_{t-1}
    ZH,  # (T, B, H) zoneout weights of the previous h
    LEN,  # (B,) int32
    COUNT,  # (cdiv(B, BB), T) int32 zeros: grid-barrier arrivals
    T, B, H, s_start, s_stop,
    HAS_BIAS: tl.constexpr, RESET_AFTER: tl.constexpr, DROPOUT: tl.constexpr,
    ZONEOUT: tl.constexpr, LENGTHS: tl.constexpr, SAVE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = S.dtype.element_ty
    pid_b = tl.program_id(0)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # (BH,)
    mb, mh = rb < B, rh < H
    m_bh = mb[:, None] & mh[None, :]
    if HAS_BIAS:  # (1, BH) rows, loaded once
        b_r, b_z = row(BHH, rh, mh, acc_ty), row(BHH, H + rh, mh, acc_ty)
        b_n = row(BHH, 2 * H + rh, mh, acc_ty)
    if HOLD:  # W_hh^T's three (BK, BH) blocks over the whole depth H
        rk = tl.arange(0, BLOCK_K)
        wmask = (rk < H)[:, None] & mh[None, :]
        w_ptrs = W + rh[None, :].to(tl.int64) * H + rk[:, None]
        w_r = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + H * H, mask=wmask, other=0.0)
        if RESET_AFTER:  # else n's product takes r ⊙ h', in its own chunks
            w_n = tl.load(w_ptrs + 2 * H * H, mask=wmask, other=0.0)
    if DROPOUT:
        keep = tl.load(DROP + rb[:, None] * H + rh[None, :], mask=m_bh, other=0.0)
    for t in range(s_start, s_stop):
        q_r = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        q_z = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        q = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, H, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < H
            hk = tl.load(state_ptrs(HS, t, rb, rk, B, H), mask=mb[:, None] & mk[None, :],
                         other=0.0, cache_modifier=".cg")  # (BB, BK): other programs wrote it
            if DROPOUT:
                hk = hk * tl.load(DROP + rb[:, None] * H + rk[None, :],
                                  mask=mb[:, None] & mk[None, :], other=0.0)
            if not HOLD:
                wmask = mk[:, None] & mh[None, :]
                w_ptrs = W + rh[None, :].to(tl.int64) * H + rk[:, None]
                w_r = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_z = tl.load(w_ptrs + H * H, mask=wmask, other=0.0)
                if RESET_AFTER:
                    w_n = tl.load(w_ptrs + 2 * H * H, mask=wmask, other=0.0)
            q_r = tl.dot(hk, w_r, acc=q_r, input_precision=PRECISION, out_dtype=acc_ty)
            q_z = tl.dot(hk, w_z, acc=q_z, input_precision=PRECISION, out_dtype=acc_ty)
            if RESET_AFTER:
                q = tl.dot(hk, w_n, acc=q, input_precision=PRECISION, out_dtype=acc_ty)
        gx = _gate_ptrs(GX, t, rb, rh, B, H, 3)
        a_r = q_r + tl.load(gx, mask=m_bh, other=0.0).to(acc_ty)
        a_z = q_z + tl.load(gx + H, mask=m_bh, other=0.0).to(acc_ty)
        if HAS_BIAS:
            a_r, a_z = a_r + b_r, a_z + b_z
        r = tl.sigmoid(a_r)
        z = tl.sigmoid(a_z)
        h_prev = tl.load(state_ptrs(HS, t, rb, rh, B, H), mask=m_bh, other=0.0,
                         cache_modifier=".cg")  # (BB, BH)
        h_in = h_prev  # h': what the step multiplies
        if DROPOUT:
            h_in = h_in * keep
        if not RESET_AFTER:  # (r ⊙ h') W_hn^T needs every unit's r: this program's, via S
            tl.store(_gate_ptrs(S, t, rb, rh, B, H, 4), r, mask=m_bh)
            tl.debug_barrier()
            q = _reset_product(S, HS, DROP, W, t, rb, mb, rh, mh, B, H, DROPOUT, BLOCK_B,
                               BLOCK_H, BLOCK_K, PRECISION)
        if HAS_BIAS:
            q += b_n
        x_n = tl.load(gx + 2 * H, mask=m_bh, other=0.0).to(acc_ty)
        if RESET_AFTER:
            n = tanh(x_n + r * q)
        else:
            n = tanh(x_n + q)
        h_new = (1.0 - z) * n + z * h_in.to(acc_ty)
        h_old = h_prev.to(acc_ty)
        if ZONEOUT:
            z_h = tl.load(state_ptrs(ZH, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
            h_new = z_h * h_old + (1.0 - z_h) * h_new
        if LENGTHS:
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]  # (BB, 1)
            h_new = tl.where(valid, h_new, h_old)
        if SAVE:
            ptrs = _gate_ptrs(S, t, rb, rh, B, H, 4)
            tl.store(ptrs, r, mask=m_bh)
            tl.store(ptrs + H, z, mask=m_bh)
            tl.store(ptrs + 2 * H, n, mask=m_bh)
            tl.store(ptrs + 3 * H, q, mask=m_bh)
        tl.store(state_ptrs(HS, t + 1, rb, rh, B, H), h_new.to(HS.dtype.element_ty), mask=m_bh)
        step_sync(COUNT, pid_b * T + t, tl.num_programs(1), SYNC)


@triton.jit
def _reset_product(S, HS, DROP, W, t, rb, mb, rh, mh, B, H, DROPOUT: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                   PRECISION: tl.constexpr):
    """(r ⊙ h') W_hn^T: (BB, H) x (H, H) -> (BB, BH), over H in chunks of BK; r from S[t]."""
    out = tl.zeros((BLOCK_B, BLOCK_H), dtype=S.dtype.element_ty)
    for k0 in range(0, H, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < H
        m = mb[:, None] & mk[None, :]
        h = tl.load(state_ptrs(HS, t, rb, rk, B, H), mask=m, other=0.0)  # (BB, BK)
        if DROPOUT:
            h = h * tl.load(DROP + rb[:, None] * H + rk[None, :], mask=m, other=0.0)
        r = tl.load(_gate_ptrs(S, t, rb, rk, B, H, 4), mask=m, other=0.0)
        w = tl.load(W + (2 * H + rh[None, :]).to(tl.int64) * H + rk[:, None],
                    mask=mk[:, None] & mh[None, :], other=0.0)  # (BK, BH): W_hn^T's block
        out = tl.dot((r * h.to(r.dtype)).to(w.dtype), w, acc=out, input_precision=PRECISION,
                     out_dtype=S.dtype.element_ty)
    return out


@triton.jit
def _reset_product_grad(DA, W, t, rb, mb, rh, mh, B, H, BLOCK_B: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """da_n W_hn, the gradient of r ⊙ h': (BB, H) x (H, H) -> (BB, BH); da_n from DA[t]."""
    out = tl.zeros((BLOCK_B, BLOCK_H), dtype=DA.dtype.element_ty)
    for k0 in range(0, H, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        mk = rk < H
        d = tl.load(_gate_ptrs(DA, t, rb, rk, B, H, 3) + 2 * H, mask=mb[:, None] & mk[None, :],
                    other=0.0)
        w = tl.load(W + (2 * H + rk[:, None]).to(tl.int64) * H + rh[None, :],
                    mask=mk[:, None] & mh[None, :], other=0.0)  # (BK, BH)
        out = tl.dot(d.to(w.dtype), w, acc=out, input_precision=PRECISION,
                     out_dtype=DA.dtype.element_ty)
    return out


@triton.jit
def _gru_backward(
    DY,  # (T, B, H) gradient of the outputs
    GH,  # (B, H) acc: in, gradient of the final h; out, of the initial h (direct part)
    HS, S, W, DROP, ZH, LEN,  # as the forward's
    DA,  # (T, B, 3H) acc: out, gradient of the input term
    DR,  # (T+1, B, 3H) acc: out, gradients of the recurrent products (r, z, q); [T] zeros.
    #      DA's memory in the reset-before form, where the two agree
    COUNT,  # (cdiv(B, BB), T) int32 zeros
    T, B, H, s_start, s_stop,
    RESET_AFTER: tl.constexpr, DROPOUT: tl.constexpr, ZONEOUT: tl.constexpr,
    LENGTHS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, HOLD: tl.constexpr,
    SYNC: tl.constexpr,
):
    acc_ty = S.dtype.element_ty
    w_ty = W.dtype.element_ty
    pid_b = tl.program_id(0)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BB,)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # (BH,)
    mb, mh = rb < B, rh < H
    m_bh = mb[:, None] & mh[None, :]
    if HOLD:  # W_hh's three (BK, BH) blocks over the whole depth H
        rk = tl.arange(0, BLOCK_K)
        wmask = (rk < H)[:, None] & mh[None, :]
        w_ptrs = W + rk[:, None].to(tl.int64) * H + rh[None, :]
        w_r = tl.load(w_ptrs, mask=wmask, other=0.0)
        w_z = tl.load(w_ptrs + H * H, mask=wmask, other=0.0)
        if RESET_AFTER:  # else n's product takes r ⊙ h', in its own chunks
            w_n = tl.load(w_ptrs + 2 * H * H, mask=wmask, other=0.0)
    if DROPOUT:
        keep = tl.load(DROP + rb[:, None] * H + rh[None, :], mask=m_bh, other=0.0).to(acc_ty)
    g_h = tl.load(GH + rb[:, None] * H + rh[None, :], mask=m_bh, other=0.0)  # (BB, BH)
    for s in range(s_start, s_stop):
        t = T - 1 - s
        # h'_t fed step t+1's products: dr_{t+1} W_hh (zero at the last step). In the
        # reset-before form n's product took r ⊙ h', whose share is already in g_h.
        rec = tl.zeros((BLOCK_B, BLOCK_H), dtype=acc_ty)
        for k0 in range(0, H, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mk = rk < H
            dr = _gate_ptrs(DR, t + 1, rb, rk, B, H, 3)  # (BB, BK)
            dmask = mb[:, None] & mk[None, :]
            if not HOLD:
                wmask = mk[:, None] & mh[None, :]
                w_ptrs = W + rk[:, None].to(tl.int64) * H + rh[None, :]
                w_r = tl.load(w_ptrs, mask=wmask, other=0.0)
                w_z = tl.load(w_ptrs + H * H, mask=wmask, other=0.0)
                if RESET_AFTER:
                    w_n = tl.load(w_ptrs + 2 * H * H, mask=wmask, other=0.0)
            d = tl.load(dr, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(d, w_r, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
            d = tl.load(dr + H, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
            rec = tl.dot(d, w_z, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
            if RESET_AFTER:
                d = tl.load(dr + 2 * H, mask=dmask, other=0.0, cache_modifier=".cg").to(w_ty)
                rec = tl.dot(d, w_n, acc=rec, input_precision=PRECISION, out_dtype=acc_ty)
        if DROPOUT:
            rec = rec * keep
        g_h += rec
        d_h = g_h + tl.load(state_ptrs(DY, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
        if LENGTHS:
            valid = (t < tl.load(LEN + rb, mask=mb, other=0))[:, None]  # (BB, 1)
            d_h = tl.where(valid, d_h, 0.0)
            g_h = tl.where(valid, 0.0, g_h)
        else:
            g_h = g_h * 0.0
        if ZONEOUT:
            z_h = tl.load(state_ptrs(ZH, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
            g_h += z_h * d_h
            d_h = (1.0 - z_h) * d_h
        sp = _gate_ptrs(S, t, rb, rh, B, H, 4)
        r = tl.load(sp, mask=m_bh, other=0.0)
        z = tl.load(sp + H, mask=m_bh, other=0.0)
        n = tl.load(sp + 2 * H, mask=m_bh, other=0.0)
        h_in = tl.load(state_ptrs(HS, t, rb, rh, B, H), mask=m_bh, other=0.0).to(acc_ty)
        if DROPOUT:
            h_in = h_in * keep
        g_in = d_h * z  # gradient of h' through z ⊙ h'
        da_z = d_h * (h_in - n) * z * (1.0 - z)
        da_n = d_h * (1.0 - z) * (1.0 - n * n)
        if RESET_AFTER:
            dq = da_n * r
            da_r = da_n * tl.load(sp + 3 * H, mask=m_bh, other=0.0) * r * (1.0 - r)
        else:  # through (r ⊙ h') W_hn^T: every unit's da_n, this program's, via DA
            tl.store(_gate_ptrs(DA, t, rb, rh, B, H, 3) + 2 * H, da_n, mask=m_bh)
            tl.debug_barrier()
            d_rh = _reset_product_grad(DA, W, t, rb, mb, rh, mh, B, H, BLOCK_B, BLOCK_H, BLOCK_K,
                                       PRECISION)
            g_in += d_rh * r
            da_r = d_rh * h_in * r * (1.0 - r)
            dq = da_n
        dp = _gate_ptrs(DA, t, rb, rh, B, H, 3)
        tl.store(dp, da_r, mask=m_bh)
        tl.store(dp + H, da_z, mask=m_bh)
        tl.store(dp + 2 * H, da_n, mask=m_bh)
        if RESET_AFTER:
            dp = _gate_ptrs(DR, t, rb, rh, B, H, 3)
            tl.store(dp, da_r, mask=m_bh)
            tl.store(dp + H, da_z, mask=m_bh)
            tl.store(dp + 2 * H, dq, mask=m_bh)
        if DROPOUT:
            g_in = g_in * keep
        g_h += g_in
        step_sync(COUNT, pid_b * T + t, tl.num_programs(1), SYNC)
    tl.store(GH + rb[:, None] * H + rh[None, :], g_h, mask=m_bh)


WEIGHTS = ("weight_hh", "bias_hh")
"""The recurrence's parameters, in the order :func:`forward` and :func:`backward` take them."""


def forward(cfg: CellConfig, gx, state, w: dict, drop, zoneout, lengths, save: bool):
    """The forward kernel over one layer and direction: (y, [h_T], saved), saved (hs, the
    gates (T, B, 4H)) being what :func:`backward` reads (without ``save``, the gates are
    scratch: one step's, or the reset-before form's r).

    Shapes: gx (T, B, 3H); h0 (B, H); drop (B, H) or None; zoneout None or [z_h (T, B, H)];
    lengths (B,) int32 or None -> y (T, B, H).
    """
    (h0,) = state
    z_h = None if zoneout is None else zoneout[0]
    w_hh, b_hh = (w.get(name) for name in WEIGHTS)
    steps, batch, _ = gx.shape
    hidden = cfg.hidden_size
    hs = gx.new_empty(steps + 1, batch, hidden)  # (T+1, B, H)
    hs[0] = h0
    acc = common.accumulator(gx.dtype)
    # (T, B, 4H); the reset-before product also reads r from it
    saved = gx.new_empty(steps if save or not cfg.reset_after else 1, batch, 4 * hidden,
                         dtype=acc)
    plan = plans(cfg, batch, gx.device)[0]
    grid = plan.grid(batch, hidden)
    assert grid[1] == 1 or cfg.reset_after, "the reset-before form needs one hidden tile"
    common.launch(
        _gru_forward, plan, grid, steps,
        gx, hs, saved, w_hh, *(hs if t is None else t for t in (b_hh, drop, z_h, lengths)),
        common.counters(plan, grid, steps, gx.device), steps, batch, hidden,
        HAS_BIAS=b_hh is not None, RESET_AFTER=cfg.reset_after, DROPOUT=drop is not None,
        ZONEOUT=z_h is not None, LENGTHS=lengths is not None, SAVE=save,
        PRECISION=common.precision(gx.dtype))
    y = hs[1:] if lengths is None else hs[1:] * common.valid(lengths, steps, hs.dtype)
    return y, [hs[steps].clone()], [hs, saved]


def backward(cfg: CellConfig, saved, w: dict, drop, zoneout, lengths, grads, needs=None):
    """The gradients [d gx, d h0, d w_hh, d b_hh (None where absent or not in ``needs``)]
    from those of [y, h_T] (``grads``) and what :func:`forward` saved."""
    hs, saved = saved
    dy, dh = grads
    z_h = None if zoneout is None else zoneout[0]
    w_hh, b_hh = (w.get(name) for name in WEIGHTS)
    needs = [True, b_hh is not None] if needs is None else needs
    steps, batch, hidden = saved.shape[0], saved.shape[1], cfg.hidden_size
    dtype, acc = hs.dtype, saved.dtype
    # A copy: the kernel turns it into the initial state's gradient in place.
    g_h = dh.to(acc, memory_format=torch.contiguous_format, copy=True)  # (B, H)
    dr = saved.new_empty(steps + 1, batch, 3 * hidden)  # (T+1, B, 3H); [T] zeros
    dr[steps] = 0
    da = saved.new_empty(steps, batch, 3 * hidden) if cfg.reset_after else dr[:steps]
    plan = plans(cfg, batch, hs.device)[1]
    grid = plan.grid(batch, hidden)
    common.launch(
        _gru_backward, plan, grid, steps,
        dy.contiguous(), g_h, hs, saved, w_hh,
        *(saved if t is None else t for t in (drop, z_h, lengths)),
        da, dr, common.counters(plan, grid, steps, hs.device), steps, batch, hidden,
        RESET_AFTER=cfg.reset_after, DROPOUT=drop is not None, ZONEOUT=z_h is not None,
        LENGTHS=lengths is not None, PRECISION=common.precision(dtype))
    h_in = hs[:-1] if drop is None else hs[:-1] * drop  # (T, B, H): h' of every step
    flat = lambda v: v.flatten(0, 1).to(dtype)  # noqa: E731  (T, B, X) -> (T*B, X)
    rows = 3 if cfg.reset_after else 2  # gates whose product took h' itself
    d_w = flat(dr[:steps]).t() @ flat(h_in)  # (3H, H)
    if not cfg.reset_after:  # n's product took r ⊙ h'
        d_w[2 * hidden:] = flat(dr[:steps, :, 2 * hidden:]).t() @ flat(
            saved[..., :hidden] * h_in)
    d_b = dr[:steps].sum((0, 1)).to(dtype) if needs[1] else None
    rec = dr[0, :, :rows * hidden].to(dtype) @ w_hh[:rows * hidden]  # (B, H)
    d_h0 = g_h + rec.to(acc) * (1.0 if drop is None else drop)
    return [da.to(dtype), d_h0.to(dtype), d_w, d_b]


class _GRUScan(torch.autograd.Function):
    """One layer, one direction: (gx, h0, w_hh, b_hh) -> (y, h_T) by :func:`forward` and
    :func:`backward`. ``extra`` holds the config, the step masks, the lengths and the input
    term's recomputation from x (for a second derivative, as :class:`lstm._LSTMScan`)."""

    @staticmethod
    def forward(ctx, extra, gx, h0, w_hh, b_hh):
        cfg, drop, zoneout, lengths, _ = extra
        y, final, saved = forward(cfg, gx, [h0], {"weight_hh": w_hh, "bias_hh": b_hh}, drop,
                                  zoneout, lengths, save=any(ctx.needs_input_grad))
        ctx.extra = extra
        ctx.save_for_backward(*saved, w_hh, b_hh, h0)
        return y, *final

    @staticmethod
    def backward(ctx, dy, dh):
        cfg, drop, zoneout, lengths, input_term = ctx.extra
        hs, saved, w_hh, b_hh, h0 = ctx.saved_tensors
        if second_order.wants_graph():
            return (None, *common.reference_gradients(
                FAMILY, cfg, WEIGHTS, drop, zoneout, lengths, input_term(), [h0], [w_hh, b_hh],
                ctx.needs_input_grad[1:], [dy, dh]))
        grads = backward(cfg, [hs, saved], {"weight_hh": w_hh, "bias_hh": b_hh}, drop, zoneout,
                         lengths, [dy, dh], needs=ctx.needs_input_grad[3:])
        return (None, *grads)


def plans(cfg: CellConfig, batch: int, device: torch.device):
    """The forward and backward launch plans; the reset-before form needs all hidden units in
    one program."""
    single = not cfg.reset_after
    plan = common.plan(3, batch, cfg.hidden_size, cfg.hidden_size, device, single)
    return plan, plan


def scan(cfg: CellConfig, w, x, state, lengths, masks):
    """One GRU layer in one direction (the backend's scan, see lstmkit.kernels.reference).

    Shape: x (T, B, I); state (B, H); lengths (B,) or None -> y (T, B, H), state (B, H).
    """
    gx = gru_input(x, w, cfg).contiguous()  # (T, B, 3H): every step's input term at once
    drop = None if masks.hidden is None else masks.hidden.contiguous()  # (B, H)
    zoneout = None if masks.zoneout is None else [masks.zoneout[0].contiguous()]  # (T, B, H)
    lens = None if lengths is None else lengths.to(x.device, torch.int32)
    weights = [None if w.get(name) is None else w[name].contiguous() for name in WEIGHTS]
    if through_ops():
        from lstmkit.kernels.triton import ops

        y, h = ops.scan(cfg, gx, [state.contiguous()], dict(zip(WEIGHTS, weights)), drop,
                        zoneout, lens)
    else:
        y, h = _GRUScan.apply((cfg, drop, zoneout, lens, lambda: gru_input(x, w, cfg)), gx,
                              state.contiguous(), *weights)
    return y, h
