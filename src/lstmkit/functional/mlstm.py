"""The mLSTM over a whole sequence in three forms that compute one function.

Shapes (B batch, NH heads, T time, DK query/key size, DV value size, L chunk length,
NC = ceil(T / L) chunks)::

    q, k (B, NH, T, DK)   v (B, NH, T, DV)   i, f (B, NH, T) gate pre-activations
    -> h (B, NH, T, DV), state (C (B, NH, DK, DV), n (B, NH, DK), m (B, NH))

The step is :func:`lstmkit.cells.mlstm.step` (equations in :mod:`lstmkit.cells.mlstm`).
Unrolled from a state (C_0, n_0, m_0), with F_t = sum_{s<=t} log f_s::

    log D_ts = F_t - F_s + i~_s            (s <= t; -inf above the diagonal)
    m_t      = max(F_t + m_0, max_s log D_ts)
    h~_t     = (e^{F_t+m_0-m_t} C_0^T q_t s + sum_s e^{log D_ts - m_t} (q_t.k_s s) v_s)
               / (max(|e^{F_t+m_0-m_t} n_0.q_t s + sum_s e^{log D_ts - m_t} q_t.k_s s|,
                      e^{-m_t}) + eps)

* **"parallel"** evaluates this for all t at once: quadratic in T, every exponent <= 0.
* **"chunkwise"** splits time into chunks of L steps, runs the parallel form inside each and
  carries (C, n, m) from chunk to chunk: the chunk's contribution to the next state is
  ``C_k = e^{g_k + m_{k-1} - m_k} C_{k-1} + sum_s e^{a_s - m_k} k_s v_s^T`` with g_k the chunk's
  total log forget gate and a_s = g_k - F_s + i~_s (F within the chunk). Linear in T.
* **"recurrent"** runs the step T times.

The max in m_t is exact in any order (it is a max-plus recurrence), so the three forms give the
same m_t and differ only by rounding; a state passed in and returned makes chunks and single
steps equal one call. T need not be a multiple of L: the last chunk is padded with steps that
leave the state unchanged (i~ = -inf, log f = 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmkit import _autocast as autocast
from lstmkit._transforms import differentiates_a_backward, fresh, recomputed_gradients
from lstmkit.cells._heads import FORGET_GATES, log_forget
from lstmkit.cells.mlstm import mLSTMState, step
from lstmkit.functional._backends import use_triton
from lstmkit.functional._precision import check_state_dtype, compute_dtype

FORMS = ("chunkwise", "parallel", "recurrent")


@autocast.own_precision
def mlstm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
          *, form: str = "chunkwise", chunk_size: int = 64, state=None,
          lengths: torch.Tensor | None = None, return_state: bool = False, eps: float | None = None,
          forget: str = "sigmoid", backend: str = "auto"):
    """The mLSTM over a sequence, per head.

    Args:
        q, k: queries and keys (B, NH, T, DK).
        v: values (B, NH, T, DV).
        i, f: input and forget gate pre-activations (B, NH, T).
        form: "chunkwise", "parallel" or "recurrent" (see the module docstring).
        chunk_size: L, steps per chunk of the chunkwise form.
        state: (C, n, m) to start from; zeros (m = 0, as NX-AI's kernels) if None. In float32
            for bfloat16 or float16 inputs, else in their dtype.
        lengths: optional (B,) integer lengths in 1..T: each sequence's state stops at its last
            step, and its outputs past it are zero (padding may hold anything, NaN included).
        return_state: also return the state after the last step.
        eps: added to the stabilised normaliser (None: NX-AI's 1e-6; 0 is the paper's form).
        forget: "sigmoid" (log f = log sigmoid(f~)) or "exp" (log f = f~).
        backend: what runs the chunkwise form: "auto" (the Triton kernels of
            :mod:`lstmkit.kernels.triton.mlstm` for CUDA tensors where Triton is installed,
            else torch), "torch" or "triton" (see :data:`lstmkit.functional._backends.BACKENDS`).
            The other forms are torch's.

    Returns:
        h~ (B, NH, T, DV) in the inputs' dtype, or ``(h~, mLSTMState)`` with ``return_state``.
        bfloat16 and float16 inputs are computed in float32 and their state is float32
        (:mod:`lstmkit.functional._precision`).

    Examples:
        >>> q, k, v = torch.randn(3, 2, 4, 10, 8, dtype=torch.float64).unbind(0)
        >>> i, f = torch.randn(2, 2, 4, 10, dtype=torch.float64).unbind(0)
        >>> h = mlstm(q, k, v, i, f, chunk_size=4)
        >>> torch.allclose(h, mlstm(q, k, v, i, f, form="recurrent"))
        True
        >>> h1, s = mlstm(q[:, :, :6], k[:, :, :6], v[:, :, :6], i[..., :6], f[..., :6],
        ...               return_state=True)
        >>> h2 = mlstm(q[:, :, 6:], k[:, :, 6:], v[:, :, 6:], i[..., 6:], f[..., 6:], state=s)
        >>> torch.allclose(torch.cat([h1, h2], 2), h)
        True
    """
    if eps is None:  # a literal, where a float default would be a symbol to dynamo (a restart)
        eps = 1e-6
    dtype = q.dtype
    state = _check(q, k, v, i, f, form, chunk_size, state, forget)
    triton = use_triton(backend, q)
    if triton and form != "chunkwise":
        raise ValueError(f"backend='triton' computes the chunkwise form only, got form={form!r}")
    # 16-bit inputs are computed in float32 on every path (the state stays float32), so the
    # torch forms and the Triton kernels return one function's numbers.
    q, k, v, i, f = (t.to(compute_dtype(dtype)) for t in (q, k, v, i, f))
    valid = None
    if lengths is not None:
        valid = (torch.arange(q.shape[2])[None, :] < lengths.cpu()[:, None]).to(q.device)
        q, k, v, i, f = _skip_padding(q, k, v, i, f, valid[:, None, :], forget)
    if q.shape[2] == 0:
        h = v.new_zeros(v.shape)
    elif triton and not differentiates_a_backward():  # else torch: functorch's higher order
        from lstmkit.kernels.triton.mlstm import chunkwise

        h, state = chunkwise(q, k, v, i, f, state, chunk_size, eps, forget)
    elif torch.compiler.is_compiling():  # one operator, no guard on T: see scan_op
        h, *final = scan_op(q, k, v, i, f, *state, form, chunk_size, eps, forget)
        state = mLSTMState(*final)
    else:
        h, state = _torch_form(q, k, v, i, f, state, form, chunk_size, eps, forget)
    if valid is not None:
        h = torch.where(valid[:, None, :, None], h, 0.0)
    h = h.to(dtype)
    return (h, state) if return_state else h


def _skip_padding(q, k, v, i, f, valid, forget):
    """Inputs whose padded steps leave the state unchanged: no input (i~ = -inf), no decay
    (log f = 0), and zeros for q, k, v so that NaN in the padding reaches nothing."""
    q, k, v = (torch.where(valid[..., None], t, 0.0) for t in (q, k, v))
    i = torch.where(valid, i, -math.inf)
    f = torch.where(valid, f, math.inf if forget == "sigmoid" else 0.0)
    return q, k, v, i, f


def _check(q, k, v, i, f, form, chunk_size, state, forget) -> mLSTMState:
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    if forget not in FORGET_GATES:
        raise ValueError(f"forget: expected one of {FORGET_GATES}, got {forget!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    for name, t in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype != q.dtype or t.device != q.device:
            raise TypeError(f"{name}: expected {q.dtype} on {q.device} (q's), "
                            f"got {t.dtype} on {t.device}")
    if q.dim() != 4:
        raise ValueError(f"q: expected shape (B, NH, T, DK), got {tuple(q.shape)}")
    B, NH, T, DK = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k: expected shape {tuple(q.shape)} (q's), got {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape ({B}, {NH}, {T}, DV), got {tuple(v.shape)}")
    for name, t in (("i", i), ("f", f)):
        if t.shape != q.shape[:3]:
            raise ValueError(f"{name}: expected shape ({B}, {NH}, {T}), got {tuple(t.shape)}")
    DV = v.shape[-1]
    if state is None:
        like = q.new_empty(0, dtype=compute_dtype(q.dtype))
        return mLSTMState(like.new_zeros(B, NH, DK, DV), like.new_zeros(B, NH, DK),
                          like.new_zeros(B, NH))
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        raise TypeError(f"state: expected a tuple (C, n, m), got {type(state).__name__}")
    for name, t, shape in zip("Cnm", state, ((B, NH, DK, DV), (B, NH, DK), (B, NH))):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"state.{name}: expected shape {shape}, got {got}")
    state = mLSTMState(*state)
    check_state_dtype("state", state, q.dtype)
    return state


def _recurrent(q, k, v, i, f, state, eps, forget):
    hs = []
    for t in range(q.shape[2]):
        h, state = step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], state,
                        eps=eps, forget=forget)
        hs.append(h)
    return torch.stack(hs, 2), state


def _chunkwise(q, k, v, i, f, state, L, eps, forget):
    T, DV = q.shape[2], v.shape[-1]
    NC = math.ceil(T / L)
    pad = NC * L - T
    logf = log_forget(f, forget)
    if pad:  # steps that leave the state unchanged: no input (i~ = -inf), no decay (log f = 0)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        i = F.pad(i, (0, pad), value=-math.inf)
        logf = F.pad(logf, (0, pad))
    # v gets a column of ones and the state's C gets n as its last column: one product then
    # yields both the numerator (DV columns) and the normaliser (the last one).
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], -1)  # (B, NH, T', DV + 1)
    q, k, v1 = (t.unflatten(2, (NC, L)) for t in (q, k, v1))  # (B, NH, NC, L, D)
    i, logf = i.unflatten(2, (NC, L)), logf.unflatten(2, (NC, L))  # (B, NH, NC, L)
    b = logf.cumsum(-1)  # F within each chunk
    # log D_ts - F_t = u_s for s <= t, so every max over s is a running max of u: O(L).
    u = i - b  # (B, NH, NC, L)
    u_max = u.cummax(-1).values  # (B, NH, NC, L)
    Cn = torch.cat([state.C, state.n[..., None]], -1)  # (B, NH, DK, DV + 1)
    Cn_in, m_in, Cn, m = _chunk_states(k, v1, u, b[..., -1], u_max[..., -1], Cn, state.m)
    h = _chunk_outputs(q, k, v1, u, b, u_max, Cn_in, m_in, eps)  # (B, NH, NC, L, DV)
    return h.flatten(2, 3)[:, :, :T], mLSTMState(Cn[..., :DV], Cn[..., DV], m)


def _torch_form(q, k, v, i, f, state, form, chunk, eps, forget):
    """The form ``form`` in torch ops: the step T times, or chunks of ``chunk`` steps (the
    parallel form is one chunk of all T)."""
    if form == "recurrent":
        return _recurrent(q, k, v, i, f, state, eps, forget)
    length = q.shape[2] if form == "parallel" else chunk
    return _chunkwise(q, k, v, i, f, state, length, eps, forget)


# Under torch.compile and torch.export the torch forms are one custom operator. Traced as
# torch ops, their shapes put guards on T: the chunkwise form's ceil(T / L) chunks, padding
# and slice back to T (a recompile once T passed a chunk, an exported program held to its
# example's chunk count), the recurrent form's loop (unrolled: a graph per T). The operator's
# shapes are T's own; its backward recomputes the forward in torch ops and differentiates it
# (once: a compiled graph's backward is not differentiated again).

@torch.library.custom_op("lstmkit::mlstm_scan", mutates_args=())
def scan_op(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C: Tensor, n: Tensor,
            m: Tensor, form: str, chunk: int, eps: float, forget: str
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h, C, n, m): :func:`_torch_form`'s results, contiguous and aliasing nothing."""
    h, state = _torch_form(q, k, v, i, f, mLSTMState(C, n, m), form, chunk, eps, forget)
    return tuple(fresh(t) for t in (h, *state))


@scan_op.register_fake
def _(q, k, v, i, f, C, n, m, form, chunk, eps, forget):
    return tuple(t.new_empty(t.shape) for t in (v, C, n, m))


@torch.library.custom_op("lstmkit::mlstm_scan_backward", mutates_args=())
def scan_backward_op(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, C: Tensor,
                     n: Tensor, m: Tensor, form: str, chunk: int, eps: float, forget: str,
                     grads: list[Tensor]) -> list[Tensor]:
    """The gradients of (q, k, v, i, f, C, n, m) given those of (h, C, n, m)."""
    def forward(q, k, v, i, f, C, n, m):
        h, state = _torch_form(q, k, v, i, f, mLSTMState(C, n, m), form, chunk, eps, forget)
        return h, *state

    return recomputed_gradients(forward, (q, k, v, i, f, C, n, m), grads)


@scan_backward_op.register_fake
def _(q, k, v, i, f, C, n, m, form, chunk, eps, forget, grads):
    return [t.new_empty(t.shape) for t in (q, k, v, i, f, C, n, m)]


def _setup_context(ctx, inputs, output):
    *tensors, form, chunk, eps, forget = inputs
    ctx.options = form, chunk, eps, forget
    ctx.save_for_backward(*tensors)


def _scan_backward(ctx, *grads):
    tensors = ctx.saved_tensors
    like = (tensors[2], *tensors[5:])  # h is v's shape; the state's gradients its own
    grads = [torch.zeros_like(t) if g is None else g.contiguous() for g, t in zip(grads, like)]
    return (*scan_backward_op(*tensors, *ctx.options, grads), None, None, None, None)


scan_op.register_autograd(_scan_backward, setup_context=_setup_context)


def _chunk_states(k, v1, u, g, top, Cn, m):
    """The state entering each chunk (Cn_in (B, NH, NC, DK, DV + 1), m_in (B, NH, NC)) and the
    last one. Cn is [C | n]; g (B, NH, NC) is each chunk's total log forget gate and top its
    largest u, so step s enters the chunk-end state with log weight g + u_s, at most g + top.

    The chunk-to-chunk recurrence ``m_c = g_c + max(m_{c-1}, top_c)``, ``Cn_c = e^{m_{c-1} -
    m_c + g_c} Cn_{c-1} + e^{top_c - m_c + g_c} Cn_loc_c`` unrolls, with G_c = g_1 + ... + g_c
    and e_c = top_c - G_{c-1}, to ``m_c = G_c + M_c``, ``M_c = max(m_0, e_1, ..., e_c)`` (a
    running max) and ``Cn_c = e^{m_0 - M_c} Cn_0 + sum_{j<=c} e^{e_j - M_c} Cn_loc_j``: one
    NC x NC product instead of a loop over the chunks. Every exponent is <= 0. The
    exponents subtract sums over the whole sequence, so they are formed in float64: the
    tensors are (B, NH, NC) small, and float32 would lose digits of G at long T."""
    # A chunk of padding only has top = -inf; shift it by 0 instead (its weights are all 0).
    finite = torch.isfinite(top)
    shift = torch.where(finite, top, torch.zeros_like(top))
    kw = k * torch.exp(u - shift[..., None])[..., None]  # (B, NH, NC, L, DK)
    Cn_loc = kw.transpose(-2, -1) @ v1  # (B, NH, NC, DK, DV + 1)
    g64, top64, m64 = g.double(), top.double(), m.double()
    G = torch.cumsum(g64, -1)  # (B, NH, NC)
    e = top64 - (G - g64)  # (B, NH, NC); -inf for a chunk of padding
    M = torch.maximum(e.cummax(-1).values, m64[..., None])  # (B, NH, NC): after chunk c
    upto = torch.ones(e.shape[-1], e.shape[-1], dtype=torch.bool, device=e.device).tril()
    logits = (e[..., None, :] - M[..., :, None]).masked_fill(~upto, -math.inf)
    weights = torch.exp(logits).to(Cn.dtype)  # (B, NH, NC, NC): chunk j into the state after c
    keep = torch.exp(m64[..., None] - M).to(Cn.dtype)  # (B, NH, NC)
    flat = Cn_loc.flatten(-2)  # (B, NH, NC, DK * (DV + 1))
    after = (weights @ flat).unflatten(-1, Cn.shape[-2:]) + keep[..., None, None] * Cn[:, :, None]
    m_after = (G + M).to(m.dtype)  # (B, NH, NC)
    states = torch.cat([Cn[:, :, None], after], 2)  # (B, NH, NC + 1, DK, DV + 1)
    ms = torch.cat([m[..., None], m_after], -1)  # (B, NH, NC + 1)
    return states[:, :, :-1], ms[..., :-1], states[:, :, -1], ms[..., -1]


def _chunk_outputs(q, k, v1, u, b, u_max, Cn_in, m_in, eps):
    L, DK = q.shape[-2], q.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    top = torch.maximum(m_in[..., None], u_max)  # (B, NH, NC, L): m_t = F_t + top_t
    log_d = (u[..., None, :] - top[..., :, None]).masked_fill(~causal, -math.inf)  # (.., L, L)
    qs = q * DK ** -0.5
    w = (qs @ k.transpose(-2, -1)) * torch.exp(log_d)  # (B, NH, NC, L, L)
    w_in = torch.exp(m_in[..., None] - top)[..., None]  # (B, NH, NC, L, 1)
    out = (w_in * qs) @ Cn_in + w @ v1  # (B, NH, NC, L, DV + 1): numerator | normaliser
    num, den = out[..., :-1], out[..., -1:]
    return num / (torch.maximum(den.abs(), torch.exp(-(b + top))[..., None]) + eps)
