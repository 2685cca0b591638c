"""The Triton kernels as torch.library custom operators, for torch.compile, torch.export and
torch.func.

Under a compiler or a transform (:func:`lstmkit._transforms.through_ops`) the kernel modules call
these operators instead of their autograd Functions: one opaque node per layer and direction,
whose fake kernels give the outputs' shapes symbolic in T and B (one graph for every length and
batch), and whose registered autograd runs the same backward kernels. Eager calls keep the
Functions (the same kernels, without the operator's dispatch per call). What is not a tensor
crosses as a string or a number: the cell config as its JSON, weight names comma-joined (a
schema has no list of strings).

Operators (each with its ``_backward`` twin): ``lstmkit::triton_scan`` (the LSTM and the GRU,
:mod:`.lstm`, :mod:`.gru`), ``lstmkit::triton_slstm_scan`` (:mod:`.slstm`) and
``lstmkit::triton_mlstm_chunkwise`` (:mod:`.mlstm`).

An operator's outputs may not alias one another, so where a Function returns a view of what it
saves (y of the states buffer) or a stand-in for an unused buffer, the operator returns a copy or
leaves the stand-in out.
"""

from __future__ import annotations

import functools
import json

import torch
from torch import Tensor

from lstmkit._transforms import constant_result, transformable
from lstmkit.config import CellConfig, cell_from_dict
from lstmkit.kernels.triton import common, gru, lstm, mlstm, slstm

_KERNELS = {"lstm": lstm, "gru": gru}
"""Family key -> the module of its kernels (each has WEIGHTS, forward and backward)."""
_GATES = {"lstm": 4, "gru": 3}


@constant_result  # a constant of the traced layer, not traced
def _text(cfg: CellConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


@functools.lru_cache(maxsize=64)
def _cell(text: str) -> CellConfig:
    return cell_from_dict(json.loads(text))


def _named(names: str, values) -> dict:
    return dict(zip(names.split(","), values)) if names else {}


def _distinct(tensors, keep=()) -> list[Tensor]:
    """The tensors, each one that shares its storage with an earlier one or with one of
    ``keep`` copied (a view of a buffer also returned: y of the states; states' gradients of
    one stack). Storages are compared: below autograd, where an operator runs, views do not
    record their base."""
    seen, out = {t.untyped_storage().data_ptr() for t in keep}, []
    for t in tensors:
        pointer = t.untyped_storage().data_ptr()
        out.append(t.clone() if pointer in seen else t)
        seen.add(pointer)
    return out


def _fresh(t: Tensor) -> Tensor:
    """``t``, copied if it is a view into a larger buffer (the fake kernels' outputs start at
    their storage's beginning, as an operator's outputs must to match them)."""
    return t.clone() if t.storage_offset() else t


# The LSTM and the GRU: [y, *final_state, *saved] (saved only with ``save``).


@torch.library.custom_op("lstmkit::triton_scan", mutates_args=())
def scan_op(config: str, gx: Tensor, state: list[Tensor], names: str, weights: list[Tensor],
            hidden: Tensor | None, zoneout: list[Tensor], lengths: Tensor | None,
            save: bool) -> list[Tensor]:
    """One layer and direction from its input term gx (T, B, G*H): ``[y, *final_state,
    *saved]``, saved (with ``save``) what :func:`scan_backward_op` reads (the buffers that
    :func:`_present` names)."""
    cfg = _cell(config)
    y, final, saved = _KERNELS[cfg.family].forward(cfg, gx, state, _named(names, weights),
                                                   hidden, zoneout or None, lengths, save)
    if not save:
        return [_fresh(y), *final]
    kept = [t for t, on in zip(saved, _present(cfg, bool(zoneout)), strict=True) if on]
    return [*_distinct([y], keep=kept), *final, *kept]


@scan_op.register_fake
def _(config, gx, state, names, weights, hidden, zoneout, lengths, save):
    cfg = _cell(config)
    steps, batch = gx.shape[:2]
    out = [gx.new_empty(steps, batch, cfg.output_size),
           *(s.new_empty(s.shape, dtype=gx.dtype) for s in state)]
    return out + (_saved_like(cfg, gx, bool(zoneout)) if save else [])


def _present(cfg: CellConfig, zoneout: bool) -> list[bool]:
    """Which of the family's saved buffers are real (else a stand-in, which the operator
    leaves out): the LSTM's hs, cs, a, xr, rstd, cn, hn; the GRU's hs and gates."""
    if cfg.family == "gru":
        return [True, True]
    norm = cfg.layer_norm
    return [True, True, True, norm, norm, zoneout, bool(cfg.proj_size)]


def _saved_like(cfg: CellConfig, gx: Tensor, zoneout: bool) -> list[Tensor]:
    """Empty tensors shaped as what the family's forward saves and the operator returns
    (lstm.forward, gru.forward)."""
    steps, batch = gx.shape[:2]
    hidden, acc = cfg.hidden_size, common.accumulator(gx.dtype)
    hs = gx.new_empty(steps + 1, batch, cfg.output_size)
    if cfg.family == "gru":
        return [hs, gx.new_empty(steps, batch, 4 * hidden, dtype=acc)]
    shapes = [(steps + 1, batch, hidden), (steps, batch, 4 * hidden),  # cs, a
              (steps, batch, 4 * hidden), (steps, batch),  # xr, rstd
              (steps, batch, hidden), (steps, batch, hidden)]  # cn, hn
    return [hs, *(gx.new_empty(shape, dtype=acc)
                  for shape, on in zip(shapes, _present(cfg, zoneout)[1:]) if on)]


@torch.library.custom_op("lstmkit::triton_scan_backward", mutates_args=())
def scan_backward_op(config: str, saved: list[Tensor], names: str, weights: list[Tensor],
                     hidden: Tensor | None, zoneout: list[Tensor], lengths: Tensor | None,
                     grads: list[Tensor]) -> list[Tensor]:
    """``[d gx, *d state, *d weights]`` given the gradients of ``[y, *final_state]``."""
    cfg = _cell(config)
    kernels = _KERNELS[cfg.family]
    # What was left out was a stand-in: the LSTM's cs, as in the forward.
    kept = iter(saved)
    saved = [next(kept) if on else saved[1] for on in _present(cfg, bool(zoneout))]
    out = kernels.backward(cfg, saved, _named(names, weights), hidden, zoneout or None, lengths,
                           grads)
    states = len(grads) - 1
    by_name = dict(zip(kernels.WEIGHTS, out[1 + states:]))
    return _distinct([*out[:1 + states], *(by_name[name] for name in names.split(",") if name)])


@scan_backward_op.register_fake
def _(config, saved, names, weights, hidden, zoneout, lengths, grads):
    cfg = _cell(config)
    hs = saved[0]
    steps, batch = hs.shape[0] - 1, hs.shape[1]
    dgx = hs.new_empty(steps, batch, _GATES[cfg.family] * cfg.hidden_size)
    return [dgx, *(g.new_empty(g.shape, dtype=hs.dtype) for g in grads[1:]),
            *(w.new_empty(w.shape, dtype=hs.dtype) for w in weights)]


def _setup_context(ctx, inputs, output):
    config, gx, state, names, weights, hidden, zoneout, lengths, save = inputs
    ctx.spec = config, names, len(state), len(zoneout)
    ctx.save_for_backward(gx, hidden, lengths, *zoneout, *state, *weights,
                          *output[1 + len(state):])


def _backward(ctx, grads):
    config, names, states, zoneouts = ctx.spec
    gx, hidden, lengths, *rest = ctx.saved_tensors
    zoneout, rest = rest[:zoneouts], rest[zoneouts:]
    count = len(names.split(",")) if names else 0
    state, weights, saved = rest[:states], rest[states:states + count], rest[states + count:]
    if not saved:  # called without save (scan does not): run the forward again to get them
        saved = scan_op(config, gx, state, names, weights, hidden, zoneout, lengths,
                        True)[1 + states:]
    out = scan_backward_op(config, saved, names, weights, hidden, zoneout, lengths,
                           [g.contiguous() for g in grads[:1 + states]])
    # One entry per input, shaped as it (an empty list for an empty list of tensors).
    return (None, out[0], out[1:1 + states], None, out[1 + states:], None, [None] * zoneouts,
            None, None)


scan_op.register_autograd(_backward, setup_context=_setup_context)
_scan_call = transformable(scan_op, _setup_context, _backward, scan_backward_op)


def _needs_saving(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def scan(cfg: CellConfig, gx: Tensor, state: list[Tensor], w: dict, hidden, zoneout, lengths):
    """(y, *final_state) of one LSTM or GRU layer and direction through ``lstmkit::triton_scan``
    (arguments as the family's ``forward`` takes them)."""
    names = [name for name in _KERNELS[cfg.family].WEIGHTS if w.get(name) is not None]
    weights = [w[name] for name in names]
    out = _scan_call(_text(cfg), gx, list(state), ",".join(names), weights, hidden,
                     list(zoneout or []), lengths, _needs_saving(gx, *state, *weights))
    return out[:1 + len(state)]


# The sLSTM: [y, h, c, n, m, *saved] (saved: pre, H, C, N, M, only with ``save``).


@torch.library.custom_op("lstmkit::triton_slstm_scan", mutates_args=())
def slstm_op(xs: Tensor, r: Tensor, state: list[Tensor], lengths: Tensor | None, forget: str,
             stabilizer: str, save: bool) -> list[Tensor]:
    """The sLSTM over xs (T, B, 4H): ``[y, *final_state, *saved]`` (:func:`slstm.forward`)."""
    y, final, saved = slstm.forward(xs, r, state, lengths, forget, stabilizer, save)
    return [*_distinct([y], keep=saved), *final, *saved] if save else [_fresh(y), *final]


@slstm_op.register_fake
def _(xs, r, state, lengths, forget, stabilizer, save):
    steps, batch, gates = xs.shape
    acc = common.accumulator(xs.dtype)
    out = [xs.new_empty(steps, batch, gates // 4), *(s.new_empty(s.shape, dtype=xs.dtype)
                                                      for s in state)]
    if save:
        out += [xs.new_empty(xs.shape, dtype=acc),
                *(xs.new_empty(steps + 1, batch, gates // 4, dtype=acc) for _ in range(4))]
    return out


@torch.library.custom_op("lstmkit::triton_slstm_scan_backward", mutates_args=())
def slstm_backward_op(r: Tensor, saved: list[Tensor], lengths: Tensor | None, forget: str,
                      stabilizer: str, grads: list[Tensor]) -> list[Tensor]:
    """``[d xs, d r, *d state]`` given the gradients of ``[y, *final_state]``."""
    return _distinct(slstm.backward(r, saved, lengths, forget, stabilizer, grads[0],
                                    grads[1:]))


@slstm_backward_op.register_fake
def _(r, saved, lengths, forget, stabilizer, grads):
    pre = saved[0]
    return [pre.new_empty(pre.shape, dtype=r.dtype), r.new_empty(r.shape),
            *(g.new_empty(g.shape, dtype=r.dtype) for g in grads[1:])]


def _slstm_setup_context(ctx, inputs, output):
    xs, r, state, lengths, forget, stabilizer, save = inputs
    ctx.options = forget, stabilizer
    ctx.save_for_backward(xs, r, lengths, *state, *output[5:])


def _slstm_backward(ctx, grads):
    forget, stabilizer = ctx.options
    xs, r, lengths, *rest = ctx.saved_tensors
    state, saved = rest[:4], rest[4:]
    if not saved:
        saved = slstm_op(xs, r, state, lengths, forget, stabilizer, True)[5:]
    out = slstm_backward_op(r, saved, lengths, forget, stabilizer,
                            [g.contiguous() for g in grads[:5]])
    return out[0], out[1], out[2:], None, None, None, None


slstm_op.register_autograd(_slstm_backward, setup_context=_slstm_setup_context)
_slstm_call = transformable(slstm_op, _slstm_setup_context, _slstm_backward, slstm_backward_op)


def slstm_scan(xs: Tensor, r: Tensor, state: list[Tensor], lengths, forget: str,
               stabilizer: str):
    """(y, *final_state) through ``lstmkit::triton_slstm_scan`` (as :func:`slstm.forward`)."""
    out = _slstm_call(xs, r, list(state), lengths, forget, stabilizer,
                      _needs_saving(xs, r, *state))
    return out[:5]


# The mLSTM's chunkwise form: [out, last, states] (states: every chunk's, what backward reads).


@torch.library.custom_op("lstmkit::triton_mlstm_chunkwise", mutates_args=())
def mlstm_op(q: Tensor, k: Tensor, v1: Tensor, u: Tensor, top: Tensor, la: Tensor, a: Tensor,
             w: Tensor, s0: Tensor, chunk: int, scale: float) -> list[Tensor]:
    """``[out, last state, every chunk's state]`` (:func:`mlstm.forward`)."""
    return list(mlstm.forward(q, k, v1, u, top, la, a, w, s0, chunk, scale))


@mlstm_op.register_fake
def _(q, k, v1, u, top, la, a, w, s0, chunk, scale):
    heads, steps, keys = q.shape
    values, chunks = v1.shape[-1], a.shape[-1]
    return [s0.new_empty(heads, steps, values), s0.new_empty(s0.shape),
            s0.new_empty(heads, chunks + 1, keys, values)]


@torch.library.custom_op("lstmkit::triton_mlstm_chunkwise_backward", mutates_args=())
def mlstm_backward_op(q: Tensor, k: Tensor, v1: Tensor, u: Tensor, top: Tensor, la: Tensor,
                      a: Tensor, w: Tensor, states: Tensor, d_out: Tensor, d_last: Tensor,
                      chunk: int, scale: float) -> list[Tensor]:
    """The gradients of (q, k, v1, u, top, la, a, w, s0) (:func:`mlstm.backward`)."""
    return mlstm.backward(q, k, v1, u, top, la, a, w, states, d_out, d_last, chunk, scale)


@mlstm_backward_op.register_fake
def _(q, k, v1, u, top, la, a, w, states, d_out, d_last, chunk, scale):
    return [*(t.new_empty(t.shape) for t in (q, k, v1, u, top, la, a, w)),
            states.new_empty(states[:, 0].shape)]


def _mlstm_setup_context(ctx, inputs, output):
    *tensors, chunk, scale = inputs
    ctx.options = chunk, scale
    ctx.save_for_backward(*tensors[:8], output[2])


def _mlstm_backward(ctx, grads):
    d_out, d_last = (g.contiguous() for g in grads[:2])
    return (*mlstm_backward_op(*ctx.saved_tensors, d_out, d_last, *ctx.options), None, None)


mlstm_op.register_autograd(_mlstm_backward, setup_context=_mlstm_setup_context)
_mlstm_call = transformable(mlstm_op, _mlstm_setup_context, _mlstm_backward, mlstm_backward_op)


def mlstm_chunkwise(q, k, v1, u, top, la, a, w, s0, chunk: int, scale: float):
    """(out, last state) through ``lstmkit::triton_mlstm_chunkwise`` (as :func:`mlstm.forward`)."""
    return _mlstm_call(q, k, v1, u, top, la, a, w, s0, chunk, scale)[:2]
