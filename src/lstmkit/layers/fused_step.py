"""The lean ``layer.step``: one compiled call for the stack, nothing checked twice.

A step through ``forward`` pays for the whole-sequence machinery at T=1: backend resolution
(hashing the config), the stack's loop and masks, and torch's own ``torch.lstm``, whose oneDNN
primitive alone costs over 100 us a call at batch 1. Here a plain float32 LSTM in inference
goes straight to :func:`lstmkit.kernels.cpu.step.lstm_step`, on weights packed once and
repacked only when a parameter changes (its storage or version counter moves). An int8 layer
(:func:`lstmkit.quantize_dynamic`) steps the same way on its int8 matrices and their row
scales, which it holds as buffers; one with int8 activations steps through its scan's own
code at T = 1 (``quant_lstm_step``), equal to the sequence path bit for bit.

What cannot change is decided once per layer (:class:`_Plan`: the config is frozen). What can
change is checked on every call, in a few attribute reads (the input's type and rank, the
state's type, whether a gradient is wanted, the mode, autocast); the op itself checks every
shape, dtype and device, in C++. Anything unusual, a bad input included, returns None and the
caller takes the general path, which raises the boundary's error for a bad input. A step's
fixed cost is the point here: each attribute read or call in Python is a tenth to a third of
a microsecond, against 10-20 us for the whole step at small H.

Legend: L layers, B rows, I input, H hidden, O head outputs.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module

from lstmkit.cells.lstm import LSTMState

log = logging.getLogger(__name__)

MAX_ROWS = 16
"""Above this many rows the batched kernels' products beat one matrix-vector product a row."""
_BACKENDS = ("auto", "cpu")
_F32 = torch.float32


def step(layer, x_t, state, head: nn.Module | None = None):
    """``(y, state)`` of ``layer.step(x_t, state)`` followed by ``head`` (None: none), or None
    where the fused step does not compute this call (the caller then takes the general path).

    Shape: x_t (B, I) or (I,) -> y (B, H) or (B, O); LSTMState (L, B, H) each; without B for
    an unbatched x_t.
    """
    plan = layer.__dict__.get("_fused_step")
    if plan is None:
        plan = layer.__dict__["_fused_step"] = _Plan(layer)
    # CPU autocast (any dtype) takes the general path, which computes what autocast asks.
    if (plan.reason is not None or type(x_t) is not torch.Tensor
            or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()):
        return None
    shape = x_t.shape
    if (len(shape) > 2 or (len(shape) == 2 and shape[0] > MAX_ROWS)
            or (layer.training and (plan.dropout or plan.int8))):
        return None
    if state is None:
        h = c = x_t.new_zeros(plan.layers, *shape[:-1], plan.hidden)
    elif type(state) is LSTMState:
        h, c = state
    else:
        return None
    if torch.is_grad_enabled() and _wants_grad(layer, head, x_t, h, c):
        return None
    packed = plan.packed()
    if packed is None:
        return None
    op, weights, biases, scales = packed
    linear = None if head is None else _linear(head)
    fused = linear is not None and not plan.integer  # int8 activations: the head is torch's
    try:  # the op checks every shape, dtype and device, and refuses what it does not compute
        y, h, c = op(weights, biases, scales, x_t, h, c, *(linear if fused else (None, None)),
                     False)
    except RuntimeError:  # the general path then raises the boundary's error
        return None
    if head is not None and not fused:
        y = head(y) if linear is None else F.linear(y, *linear)  # what its call runs
    return y, LSTMState(h, c)


def _wants_grad(layer, head, *tensors) -> bool:
    params = [*layer._parameters.values(), *(() if head is None else head.parameters())]
    return any(t.requires_grad for t in (*tensors, *params))


def _linear(head: nn.Module) -> tuple | None:
    """``(weight, bias)`` of ``head`` where it is a float32 CPU ``nn.Linear`` whose call is
    exactly ``F.linear`` (no hooks), else None. Read from the module's dicts: nn.Module's
    ``__getattr__`` costs about a microsecond a name, a tenth of a whole step."""
    if (type(head) is not nn.Linear or head._forward_hooks or head._forward_pre_hooks
            or _module._global_forward_hooks or _module._global_forward_pre_hooks):
        return None
    params = head._parameters
    weight = params["weight"]
    return (weight, params["bias"]) if weight.dtype == _F32 and weight.is_cpu else None


class _Plan:
    """What never changes for a layer (whether the fused step applies: its config is frozen)
    and what changes rarely (the packed weights, keyed by each parameter's storage and
    version, so an optimizer step, ``load_state_dict``, ``.to()`` or a replaced parameter
    repacks them). A tensor made under inference_mode has no version counter (and can change
    in place only under inference_mode again): its storage alone keys it."""

    def __init__(self, layer):
        from lstmkit.kernels.cpu import step

        config = layer.config
        self.layer = layer
        self.int8 = hasattr(layer, "quant_backend")  # layers/quantized.py: buffers, no parameters
        backend = layer.quant_backend if self.int8 else config.backend
        self.reason = (f"backend {backend!r}" if backend not in _BACKENDS
                       else step.covers(config))
        # int8 activations: each layer is the int8 scan's own code at T = 1 (quant_ops.h), so a
        # step computes what the sequence path does, bit for bit; its head stays torch's.
        self.integer = self.int8 and layer.activations == "int8"
        self._tensors = layer._buffers if self.int8 else layer._parameters
        self._dtypes = (_F32, torch.int8) if self.int8 else (_F32,)
        self.layers = config.num_layers
        self.hidden = config.cell.hidden_size
        self.dropout = bool(config.dropout) and config.num_layers > 1  # in training only
        self._key, self._packed, self._versioned = None, None, False

    def _key_of(self, params) -> list:
        if self._versioned:
            return [(p.data_ptr(), p._version) for p in params]
        return [p.data_ptr() for p in params]

    def packed(self) -> tuple | None:
        """(op, packed weights, biases, int8 scales), or None where the parameters are not
        float32 CPU tensors (an int8 layer's buffers: int8 matrices, float32 others) or the
        extension cannot be built."""
        params = self._tensors.values()
        if self._key_of(params) == self._key:
            return self._packed
        if not all(p.is_cpu and p.dtype in self._dtypes for p in params):
            return None
        from lstmkit.kernels.cpu import _build, step

        try:  # builds the extension on first use
            ops = _build.ops()
            op = ops.quant_lstm_step.default if self.integer else ops.lstm_step.default
        except RuntimeError as error:
            log.warning("the fused step is off: %s", error)
            self.reason = str(error)
            return None
        weights = [w for (w,) in self.layer.cell_weights()]
        matrices = {"weight_ih", "weight_hh"} if self.int8 else set()
        if not all(t.dtype == (torch.int8 if name in matrices else _F32)
                   for w in weights for name, t in w.items() if t is not None):
            return None
        if self.integer:
            self._packed = (op, *_integer_arrays(weights))
        elif self.int8:
            layers = [step.pack_int8(w["weight_ih"], w["weight_ih_scale"], w["weight_hh"],
                                     w["weight_hh_scale"], w.get("bias_ih"), w.get("bias_hh"))
                      for w in weights]
        else:
            layers = [step.pack(w["weight_ih"], w["weight_hh"], w.get("bias_ih"),
                                w.get("bias_hh")) for w in weights]
        if not self.integer:
            self._packed = (op, [w.packed for w in layers], [w.bias for w in layers],
                            [w.scale for w in layers])
        self._versioned = not any(p.is_inference() for p in params)
        self._key = self._key_of(params)
        return self._packed


def _integer_arrays(weights: list[dict]) -> tuple[list, list, list]:
    """What quant_lstm_step reads, per layer: the int8 matrices, the biases (zeros where absent)
    and the rows' scales and sums (the zero point's term, summed once here)."""
    matrices, biases, rows = [], [], []
    for w in weights:
        q_ih, q_hh = w["weight_ih"], w["weight_hh"]
        matrices += [q_ih, q_hh]
        biases += [q_hh.new_zeros(q_hh.shape[0], dtype=_F32) if w.get(name) is None
                   else w[name].contiguous() for name in ("bias_ih", "bias_hh")]
        rows += [w["weight_ih_scale"], w["weight_hh_scale"], q_ih.sum(1, dtype=torch.int32),
                 q_hh.sum(1, dtype=torch.int32)]
    return matrices, biases, rows
