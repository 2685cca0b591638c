"""The reference backend: the cells' plain-PyTorch steps in a Python loop over time.

It is the specification every other backend is tested against, and declares everything: any
registered family, option, dtype, device and layer feature.

In bfloat16 and float16 it upcasts: the recurrence runs in float32 on the 16-bit weights,
inputs and state (exactly converted), and the output and final state are rounded to the 16-bit
dtype once, at the end of the call; autograd rounds each gradient once, to its tensor's dtype.
That is the most a 16-bit backend can promise ("16-bit storage, float32 arithmetic"), and what
the 16-bit rows of the conformance table measure everything else against. Plain PyTorch op by
op in 16 bits (torch.nn's own bfloat16 LSTM) rounds every intermediate instead, and float16's
range overflows in the exponential gates of the xLSTM families.

Under torch.compile and torch.export the loop is one custom operator (``scan_op`` below), so
that a compiled or exported layer on this backend serves every T in one graph.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch
from torch import Tensor

from lstmkit._autocast import SIXTEEN_BIT  # upcast to float32 (see the module docstring)
from lstmkit._transforms import constant_result, fresh, recomputed_gradients
from lstmkit.cells import family_of
from lstmkit.cells.base import ANY, Family, hidden, map_state, state_tensors
from lstmkit.config import CellConfig, cell_from_dict
from lstmkit.kernels.contract import Backend, Declaration, StepMasks


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
         lengths: torch.Tensor | None, masks: StepMasks, rounding: str | None = None,
         rounded: tuple[str, ...] = ()):
    """One layer in one direction over time.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    Past a sequence's length its state stays as it was and its output is zero. ``rounding``:
    a key of :data:`ROUNDINGS`, applied to the products with the weights named ``rounded``.
    """
    if torch.compiler.is_compiling():  # one operator, no guard on T: see scan_op
        names = tuple(name for name, t in w.items() if t is not None)
        y, *final = scan_op(_text(cfg, names, rounding, tuple(rounded)),
                            [w[name] for name in names], x, list(state_tensors(state)),
                            lengths, masks.hidden, list(masks.zoneout or ()))
        return y, family.make_state(*final)
    with _rounding(rounding, [w[name] for name in rounded]):
        return _upcast(scan_in_dtype, family, cfg, w, x, state, lengths, masks)


ROUNDINGS: dict[str, type] = {}
"""Name -> a ``TorchFunctionMode`` class built from a list of weights, that rounds the operands
of the products with those weights (layers/quantized.py registers int8 activations' rows):
the specification of a backend whose products round, on the reference's cells unchanged."""


def _rounding(name: str | None, weights: list[torch.Tensor]):
    return contextlib.nullcontext() if name is None else ROUNDINGS[name](weights)


def recurrence(family: Family, cfg: CellConfig, w: dict, gx: torch.Tensor, state,
               lengths: torch.Tensor | None, masks: StepMasks):
    """:func:`scan` from the input terms ``gx`` (T, B, G*H) on: the time loop alone, for a
    backend that computes the input term itself (Triton's); ``w`` needs only the recurrent
    weights."""
    return _upcast(recurrence_in_dtype, family, cfg, w, gx, state, lengths, masks)


def _upcast(run, family, cfg, w, x, state, lengths, masks):
    """``run(family, cfg, w, x, state, lengths, masks)``, in float32 for 16-bit x (the module
    docstring) and rounded back to x's dtype."""
    if x.dtype not in SIXTEEN_BIT:
        return run(family, cfg, w, x, state, lengths, masks)

    def up(t):
        return None if t is None else t.float()

    masks = StepMasks(up(masks.hidden),
                      None if masks.zoneout is None else tuple(map(up, masks.zoneout)))
    y, final = run(family, cfg, {name: up(t) for name, t in w.items()}, up(x),
                   map_state(family, up, state), lengths, masks)
    return y.to(x.dtype), map_state(family, lambda t: t.to(x.dtype), final)


def scan_in_dtype(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state,
                  lengths: torch.Tensor | None, masks: StepMasks):
    """:func:`scan` with every operation in x's dtype, 16-bit ones too: plain PyTorch op by op
    (the tests' 16-bit baseline)."""
    gx = family.input(x, w, cfg)  # (T, B, G*H): the input term of every step in one product
    return recurrence_in_dtype(family, cfg, w, gx, state, lengths, masks)


def recurrence_in_dtype(family: Family, cfg: CellConfig, w: dict, gx: torch.Tensor, state,
                        lengths: torch.Tensor | None, masks: StepMasks):
    """The time loop of :func:`scan_in_dtype`, from the input terms ``gx`` (T, B, G*H) on."""
    valid = None if lengths is None else (
        torch.arange(gx.shape[0])[:, None] < lengths[None, :]).to(gx.device)  # (T, B)
    outputs = []
    for t in range(gx.shape[0]):
        recurrent = state if masks.hidden is None else _drop_hidden(family, state, masks.hidden)
        new = family.step(gx[t], recurrent, w, cfg)
        out, new = new if family.step_output else (None, new)
        if masks.zoneout is not None:
            keep = [z[t] for z in masks.zoneout]
            new = family.make_state(*(z * prev + (1 - z) * cur for z, prev, cur
                                      in zip(keep, state_tensors(state), state_tensors(new))))
        if valid is not None:
            v = valid[t]
            new = map_state(family, lambda prev, cur, v=v: torch.where(_rows(v, cur), cur, prev),
                            state, new)
            out = hidden(new) if out is None else out
            outputs.append(out * _rows(v, out))
        else:
            outputs.append(hidden(new) if out is None else out)
        state = new
    return torch.stack(outputs), state


def _rows(valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """valid (B,) shaped to broadcast over a state tensor (B, ...) of any rank."""
    return valid.view(valid.shape + (1,) * (like.dim() - 1))


def _drop_hidden(family, state, mask):
    tensors = list(state_tensors(state))
    tensors[0] = tensors[0] * mask
    return family.make_state(*tensors)


# Under torch.compile and torch.export the scan is one custom operator. Traced as torch ops,
# its Python loop over time unrolls into a graph per T (a recompile at every new length, an
# exported program held to its example's T). The operator's shapes are T's own, whatever the
# family: its fake kernel runs one step on fake tensors to learn the output's and state's
# shapes, so a newly registered family compiles with no code of its own. The backward
# recomputes the forward in torch ops and differentiates it (once: a compiled graph's backward
# is not differentiated again).

@constant_result  # a constant of the traced layer, not traced
def _text(cfg: CellConfig, names: tuple[str, ...], rounding: str | None = None,
          rounded: tuple[str, ...] = ()) -> str:
    return json.dumps({"cell": cfg.to_dict(), "weights": names, "rounding": rounding,
                       "rounded": rounded}, sort_keys=True)


@functools.lru_cache(maxsize=64)
def _config(text: str):
    data = json.loads(text)
    cfg = cell_from_dict(data["cell"])
    return family_of(cfg), cfg, tuple(data["weights"]), data["rounding"], data["rounded"]


def _run(text, weights, x, state, lengths, hidden_mask, zoneout, fake: bool = False):
    """The scan ``text`` describes; ``fake``: for shapes alone (fake tensors have no storage
    for a rounding to find its weights by)."""
    family, cfg, names, rounding, rounded = _config(text)
    masks = StepMasks(hidden_mask, tuple(zoneout) or None)
    w = dict(zip(names, weights))
    with _rounding(None if fake else rounding, [w[name] for name in rounded]):
        y, final = _upcast(scan_in_dtype, family, cfg, w, x, family.make_state(*state),
                           lengths, masks)
    return y, state_tensors(final)


@torch.library.custom_op("lstmkit::reference_scan", mutates_args=())
def scan_op(config: str, weights: list[Tensor], x: Tensor, state: list[Tensor],
            lengths: Tensor | None, hidden_mask: Tensor | None, zoneout: list[Tensor]
            ) -> list[Tensor]:
    """``[y, *final_state]`` of :func:`scan` for the cell config and weight names ``config``
    (:func:`_text`'s JSON), contiguous and aliasing nothing."""
    y, final = _run(config, weights, x, state, lengths, hidden_mask, zoneout)
    return [fresh(t) for t in (y, *final)]


@scan_op.register_fake
def _(config, weights, x, state, lengths, hidden_mask, zoneout):
    y, _ = _run(config, weights, x[:1], state, None, hidden_mask, [z[:1] for z in zoneout],
                fake=True)
    return [y.new_empty(x.shape[0], *y.shape[1:]), *(t.new_empty(t.shape) for t in state)]


@torch.library.custom_op("lstmkit::reference_scan_backward", mutates_args=())
def scan_backward_op(config: str, weights: list[Tensor], x: Tensor, state: list[Tensor],
                     lengths: Tensor | None, hidden_mask: Tensor | None, zoneout: list[Tensor],
                     grads: list[Tensor]) -> list[Tensor]:
    """``[*dweights, dx, *dstate]`` given the gradients of ``scan_op``'s outputs."""
    n = len(weights)

    def forward(*tensors):
        y, final = _run(config, tensors[:n], tensors[n], tensors[n + 1:], lengths, hidden_mask,
                        zoneout)
        return y, *final

    return recomputed_gradients(forward, (*weights, x, *state), grads)


@scan_backward_op.register_fake
def _(config, weights, x, state, lengths, hidden_mask, zoneout, grads):
    return [t.new_empty(t.shape) for t in (*weights, x, *state)]


def _setup_context(ctx, inputs, output):
    config, weights, x, state, lengths, hidden_mask, zoneout = inputs
    ctx.spec = config, len(weights), len(state)
    ctx.save_for_backward(*weights, x, *state, lengths, hidden_mask, *zoneout)


def _backward(ctx, grads):
    config, n, states = ctx.spec
    saved = ctx.saved_tensors
    weights, x, state = saved[:n], saved[n], saved[n + 1:n + 1 + states]
    lengths, hidden_mask, *zoneout = saved[n + 1 + states:]
    out = scan_backward_op(config, weights, x, state, lengths, hidden_mask, zoneout,
                           [g.contiguous() for g in grads])
    return None, out[:n], out[n], out[n + 1:], None, None, [None] * len(zoneout)


scan_op.register_autograd(_backward, setup_context=_setup_context)


BACKEND = Backend(name="reference", declaration=Declaration(families=ANY), scan=scan)
