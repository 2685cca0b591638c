"""The native backend: torch's own fused kernels (oneDNN on CPU, cuDNN on GPU).

It declares exactly the configurations torch.nn.LSTM/GRU/RNN compute (each family's
:class:`~lstmkit.cells.base.TorchEquivalent`; no recurrent dropout or zoneout), and runs the whole
stack in one call of the family's torch op, inter-layer dropout included, so for those a drop-in
lstmkit layer gives torch.nn's numbers bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmkit._transforms import (
    constant_result,
    recomputed_gradients,
    static,
    through_ops,
    transformable,
)
from lstmkit.cells import FAMILIES, family_of
from lstmkit.cells.base import Family, state_tensors
from lstmkit.config import LayerConfig
from lstmkit.kernels.contract import Backend, Declaration


def _flat(weights) -> list[torch.Tensor]:
    """torch.nn's ``_flat_weights`` order: per layer and direction its tensors in the family's
    parameter order, which is torch.nn's (w_ih, w_hh, b_ih, b_hh, w_hr)."""
    return [t for layer in weights for w in layer for t in w.values()]


def stack(family: Family, config: LayerConfig, weights, x, state, lengths, training):
    """The whole stack (see :mod:`lstmkit.kernels.contract`)."""
    if through_ops():
        return _compiled(family, config, _flat(weights), x, state_tensors(state), lengths,
                         training)
    return _stack(family, config, _flat(weights), x, state_tensors(state), lengths, training)


def _stack(family: Family, config: LayerConfig, flat, x, hx, lengths, training):
    call = _Call(family, config, flat, training)
    if lengths is None:
        return call.dense(x, hx)
    if config.bidirectional:  # the reverse pass starts at each sequence's own end
        return call.packed(x, hx, lengths)
    # Forwards, every sequence is whole up to the shortest length: run that prefix densely and
    # only the ragged rest packed. torch's packed CPU path is several times slower per step
    # than its dense one, and batches of similar lengths are the common case.
    shortest = int(lengths.min())
    head, state = call.dense(x[:shortest], hx)
    running = lengths > shortest
    if not running.any():  # every sequence ends together (maybe before T): zeros past it
        return torch.cat([head, head.new_zeros((x.shape[0] - shortest, *head.shape[1:]))]), state
    live = running.nonzero().squeeze(1).to(x.device)  # sequences still running
    at_prefix = state_tensors(state)
    tail, final = call.packed(x[shortest:].index_select(1, live),
                              tuple(h.index_select(1, live) for h in at_prefix),
                              lengths[running] - shortest)
    tail = head.new_zeros(tail.shape[0], x.shape[1], head.shape[2]).index_copy(1, live, tail)
    final = (h.index_copy(1, live, f) for h, f in zip(at_prefix, state_tensors(final)))
    return torch.cat([head, tail]), call.family.make_state(*final)


class _Call:
    """One configuration's torch op with its fixed arguments, run densely or packed."""

    def __init__(self, family: Family, config: LayerConfig, flat, training: bool):
        self.op, self.family = family.torch.op(config.cell), family
        self.tuple_state = len(family.state(config.cell)) > 1  # torch.lstm takes [h, c]
        self.args = (list(flat), config.cell.bias, config.num_layers, config.dropout,
                     training, config.bidirectional)

    def _hx(self, hx):
        return hx if self.tuple_state else hx[0]

    def dense(self, x, hx):
        out, *final = self.op(x, self._hx(hx), *self.args, False)
        return out, self.family.make_state(*final)

    def packed(self, x, hx, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        hx_sorted = tuple(h.index_select(1, order) for h in hx)
        data, *final = self.op(packed.data, packed.batch_sizes, self._hx(hx_sorted), *self.args)
        out, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, order, unorder),
                                     total_length=x.shape[0])
        return out, self.family.make_state(*(h.index_select(1, unorder) for h in final))


# Under torch.compile and torch.export the stack is one custom operator: dynamo cannot trace
# torch.nn's RNN machinery, and tracing torch.lstm itself decomposes it into one node per time
# step (a graph per length). The op is opaque, its fake kernel gives shapes symbolic in T and B,
# and its backward runs torch's own (recomputing the forward under autograd, since a custom op
# keeps no graph). Eager calls never go through it: they stay torch.nn's numbers and speed.


def _compiled(family: Family, config: LayerConfig, flat, x, hx, lengths, training):
    seed = None
    if training and static(config, "dropout") and config.num_layers > 1:  # the backward redraws
        seed = torch.randint(0, 2**62, (), dtype=torch.int64)
    y, *final = _stack_call(_text(config), x, list(hx), list(flat), lengths,
                         training, seed)
    return y, family.make_state(*final)


@constant_result  # a constant of the traced layer, not traced
def _text(config: LayerConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


@functools.lru_cache(maxsize=64)
def _config(text: str) -> tuple[Family, LayerConfig]:
    config = LayerConfig.from_dict(json.loads(text))
    return family_of(config.cell), config


def _seeded(seed: Tensor | None, device: torch.device):
    """Inter-layer dropout drawn from ``seed``, so that the backward's recomputation draws the
    forward's masks; the global generator is left as it was."""
    if seed is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    on_cpu = device.type == "cpu"  # fork_rng always forks the CPU's generator
    stack.enter_context(torch.random.fork_rng(devices=[] if on_cpu else [device],
                                              device_type="cuda" if on_cpu else device.type))
    generator = torch.default_generator if on_cpu else torch.cuda
    generator.manual_seed(int(seed))
    return stack


@torch.library.custom_op("lstmkit::native_stack", mutates_args=())
def stack_op(config: str, x: Tensor, hx: list[Tensor], weights: list[Tensor],
             lengths: Tensor | None, training: bool, seed: Tensor | None) -> list[Tensor]:
    """The stack of the layer config ``config`` (its JSON): ``[y, *final_state]``; weights
    in torch.nn's ``_flat_weights`` order."""
    family, layer = _config(config)
    with _seeded(seed, x.device):
        y, state = _stack(family, layer, weights, x, tuple(hx), lengths, training)
    return [y, *state_tensors(state)]


@stack_op.register_fake
def _(config, x, hx, weights, lengths, training, seed):
    _, layer = _config(config)
    steps, batch = x.shape[:2]  # x (T, B, I); h (L*D, B, P)
    y = x.new_empty(steps, batch, layer.num_directions * hx[0].shape[-1])
    return [y, *(h.new_empty(h.shape) for h in hx)]


@torch.library.custom_op("lstmkit::native_stack_backward", mutates_args=())
def stack_backward_op(config: str, x: Tensor, hx: list[Tensor], weights: list[Tensor],
                      lengths: Tensor | None, training: bool, seed: Tensor | None,
                      grads: list[Tensor]) -> list[Tensor]:
    """``[dx, *dhx, *dweights]`` given the gradients of ``stack_op``'s outputs."""
    family, layer = _config(config)
    states = len(hx)

    def forward(x, *rest):
        with _seeded(seed, x.device):  # the forward's inter-layer dropout masks, drawn again
            y, state = _stack(family, layer, rest[states:], x, rest[:states], lengths, training)
        return y, *state_tensors(state)

    return recomputed_gradients(forward, (x, *hx, *weights), grads)


@stack_backward_op.register_fake
def _(config, x, hx, weights, lengths, training, seed, grads):
    return [t.new_empty(t.shape) for t in (x, *hx, *weights)]


def _setup_context(ctx, inputs, output):
    config, x, hx, weights, lengths, training, seed = inputs
    ctx.spec = config, training, len(hx)
    ctx.save_for_backward(x, lengths, seed, *hx, *weights)


def _backward(ctx, grads):
    config, training, states = ctx.spec
    x, lengths, seed, *rest = ctx.saved_tensors
    hx, weights = rest[:states], rest[states:]
    out = stack_backward_op(config, x, hx, weights, lengths, training, seed,
                            [g.contiguous() for g in grads])
    return None, out[0], out[1:1 + states], out[1 + states:], None, None, None


stack_op.register_autograd(_backward, setup_context=_setup_context)
_stack_call = transformable(stack_op, _setup_context, _backward, stack_backward_op)


DECLARATION = Declaration(
    families={key: family.torch.options for key, family in FAMILIES.items() if family.torch},
    # torch 2.13 runs the three families in bfloat16 and float16 on the CPU too, forward and
    # backward, rounding its intermediates to the dtype (the conformance table's 16-bit rows).
    dtypes=(torch.float32, torch.float64, torch.bfloat16, torch.float16),
    features=frozenset({"lengths", "bidirectional", "dropout"}))
"""What torch.nn computes; a family registered later is not declared (refused)."""

BACKEND = Backend(name="native", declaration=DECLARATION, stack=stack)
