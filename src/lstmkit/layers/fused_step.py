"""The lean ``layer.step``: one compiled call per layer, nothing checked twice.

A step through ``forward`` pays for the whole-sequence machinery at T=1: backend resolution
(hashing the config), the stack's loop and masks, and torch's own ``torch.lstm``, whose oneDNN
primitive alone costs over 100 us a call at batch 1. Here a plain float32 LSTM in inference
goes straight to :func:`lstmkit.kernels.cpu.step.lstm_step`, on weights packed once and
repacked only when a parameter changes (its version counter or storage moves). What can change
per call is still checked: the input (by the caller), the state's type, shapes, dtype and
device, whether a gradient is wanted, the mode.

Legend: L layers, B rows, I input, H hidden.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lstmkit.cells.base import check_state
from lstmkit.cells.lstm import LSTMState

log = logging.getLogger(__name__)

MAX_ROWS = 16
"""Above this many rows the batched kernels' products beat one matrix-vector product a row."""
_BACKENDS = ("auto", "cpu")


def weights(layer, x_t: torch.Tensor, state, head: nn.Module | None = None) -> tuple | None:
    """What :func:`run` needs (the op and each layer's packed weights) if the fused step
    computes this call, else None (the caller then steps through ``forward``)."""
    plan = layer.__dict__.get("_fused_step")
    if plan is None:
        plan = layer.__dict__["_fused_step"] = _Plan(layer)
    if plan.reason is not None or x_t.dtype != torch.float32 or not x_t.is_cpu:
        return None
    if x_t.dim() == 2 and x_t.shape[0] > MAX_ROWS or torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and _wants_grad(layer, head, x_t, state):
        return None
    if layer.training and layer.config.dropout and layer.config.num_layers > 1:
        return None
    return plan.packed()


def _wants_grad(layer, head, x_t, state) -> bool:
    params = [*layer._parameters.values(), *(() if head is None else head.parameters())]
    if x_t.requires_grad or any(p.requires_grad for p in params):
        return True
    parts = state if isinstance(state, tuple) else ()
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in parts)


def run(layer, packed: tuple, x_t: torch.Tensor, state, head: nn.Module | None = None):
    """``layer.step`` through the compiled step, ``packed`` from :func:`weights`, then ``head``
    on its output if given (in the same call for a plain ``nn.Linear`` without hooks).

    Shape: x_t (B, I) or (I,) -> (y (B, H) or (B, O), LSTMState (L, B, H) each), without B
    for an unbatched x_t.
    """
    leading = (layer.num_layers, x_t.shape[0]) if x_t.dim() == 2 else (layer.num_layers,)
    if state is None:
        h = c = x_t.new_zeros(*leading, layer.hidden_size)
    elif not _state_ok(state, leading + (layer.hidden_size,)):  # raises the boundary's error
        h, c = check_state(layer.family, layer.config.cell, state, leading,
                           layer.weight_ih_l0, "state")
    else:
        h, c = state
    op, weights, biases = packed
    fused = head is not None and _plain_linear(head)
    hw, hb = (head.weight, head.bias) if fused else (None, None)
    y, h, c = op(weights, biases, x_t, h, c, hw, hb, False)
    if head is not None and not fused:
        y = head(y)
    return y, layer.family.make_state(h, c)


def _state_ok(state, shape: tuple) -> bool:
    """The common case of a well-formed state, checked in a few attribute reads; anything else
    goes through :func:`check_state` for its error."""
    if type(state) is not LSTMState:
        return False
    h, c = state
    return (type(h) is torch.Tensor and type(c) is torch.Tensor and h.shape == shape
            and c.shape == shape and h.dtype == c.dtype == torch.float32
            and h.is_cpu and c.is_cpu)


def _plain_linear(head: nn.Module) -> bool:
    """Whether ``head`` is an ``nn.Linear`` whose call is exactly ``F.linear`` (no hooks)."""
    from torch.nn.modules import module

    return (type(head) is nn.Linear and head.weight.dtype == torch.float32
            and not (head._forward_hooks or head._forward_pre_hooks
                     or module._global_forward_hooks or module._global_forward_pre_hooks))


class _Plan:
    """What never changes for a layer (whether the fused step applies: its config is frozen)
    and what changes rarely (the packed weights, keyed by each parameter's storage and
    version, so an optimizer step, ``load_state_dict``, ``.to()`` or a replaced parameter
    repacks them). A tensor made under inference_mode has no version counter (and can change
    in place only under inference_mode again): its storage alone keys it."""

    def __init__(self, layer):
        from lstmkit.kernels.cpu import step

        self.layer = layer
        self.reason = (f"backend {layer.config.backend!r}" if layer.config.backend
                       not in _BACKENDS else step.covers(layer.config))
        self._key, self._packed, self._versioned = None, None, False

    def packed(self) -> tuple | None:
        params = self.layer._parameters.values()
        key = [(p.data_ptr(), p._version) for p in params] if self._versioned else \
            [p.data_ptr() for p in params]
        if key != self._key:
            from lstmkit.kernels.cpu import _build, step

            try:
                step.isa()  # builds the extension on first use
            except RuntimeError as error:
                log.warning("the fused step is off: %s", error)
                self.reason = str(error)
                return None
            layers = [step.pack(w["weight_ih"], w["weight_hh"], w.get("bias_ih"),
                                w.get("bias_hh")) for (w,) in self.layer.cell_weights()]
            # (op, packed weights, biases): what run() passes, looked up once
            self._packed = (_build.ops().lstm_step.default, [w.packed for w in layers],
                            [w.bias for w in layers])
            self._versioned = not any(p.is_inference() for p in params)
            self._key = [(p.data_ptr(), p._version) for p in params] if self._versioned else \
                [p.data_ptr() for p in params]
        return self._packed
