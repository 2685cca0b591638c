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

from lstmkit.cells.slstm import FORGET_GATES, STABILIZERS, pointwise, sLSTMState


def slstm(x: torch.Tensor, r: torch.Tensor, *, state=None, lengths: torch.Tensor | None = None,
          return_state: bool = False, forget: str = "sigmoid", stabilizer: str = "nxai"):
    """The sLSTM over a sequence.

    Args:
        x: input terms (B, T, 4H).
        r: recurrent matrix (NH, DH, 4, DH).
        state: (h, c, n, m), each (B, H), to start from; zeros if None.
        lengths: optional (B,) integer lengths in 1..T: each sequence's state stops at its last
            step and its outputs past it are zero.
        return_state: also return the state after the last (valid) step.
        forget: "sigmoid" or "exp".
        stabilizer: "nxai" or "paper" (see :mod:`lstmkit.cells.slstm`).

    Returns:
        h (B, T, H), or ``(h, sLSTMState)`` with ``return_state``.

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
    if state is None:
        state = sLSTMState(*x.new_zeros(4, B, H))
    elif not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError(f"state: expected a tuple (h, c, n, m), got {type(state).__name__}")
    for name, t in zip(sLSTMState._fields, state):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, H):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"state.{name}: expected shape ({B}, {H}), got {got}")
    heads = sLSTMState(*(t.reshape(B, NH, DH).transpose(0, 1) for t in state))  # (NH, B, DH)
    xs = x.reshape(B, T, 4, NH, DH).permute(1, 3, 0, 2, 4).reshape(T, NH, B, 4 * DH)
    weight = r.reshape(NH, DH, 4 * DH)
    valid = None
    if lengths is not None:
        valid = (torch.arange(T)[:, None] < lengths.cpu()[None, :]).to(x.device)  # (T, B)
    hs = []
    for t in range(T):
        pre = torch.baddbmm(xs[t], heads.h, weight)  # (NH, B, 4 DH)
        new = pointwise(*pre.chunk(4, -1), heads, forget=forget, stabilizer=stabilizer)
        if valid is not None:
            keep = valid[t][None, :, None]
            new = sLSTMState(*(torch.where(keep, a, b) for a, b in zip(new, heads)))
            hs.append(torch.where(keep, new.h, 0.0))
        else:
            hs.append(new.h)
        heads = new
    h = torch.stack(hs).permute(2, 0, 1, 3).reshape(B, T, H) if T else x.new_zeros(B, 0, H)
    if not return_state:
        return h
    return h, sLSTMState(*(t.transpose(0, 1).reshape(B, H) for t in heads))


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
