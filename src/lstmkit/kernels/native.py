"""The native backend: torch's own fused kernels (oneDNN on CPU, cuDNN on GPU).

It declares exactly the configurations torch.nn.LSTM/GRU/RNN compute (each family's
:class:`~lstmkit.cells.base.TorchEquivalent`; no recurrent dropout or zoneout), and runs the whole
stack in one call of the family's torch op, inter-layer dropout included, so for those a drop-in
lstmkit layer gives torch.nn's numbers bit for bit.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmkit.cells import FAMILIES
from lstmkit.cells.base import Family, state_tensors
from lstmkit.config import LayerConfig
from lstmkit.kernels.contract import Backend, Declaration


def _flat(weights) -> list[torch.Tensor]:
    """torch.nn's ``_flat_weights`` order: per layer and direction its tensors in the family's
    parameter order, which is torch.nn's (w_ih, w_hh, b_ih, b_hh, w_hr)."""
    return [t for layer in weights for w in layer for t in w.values()]


def stack(family: Family, config: LayerConfig, weights, x, state, lengths, training):
    """The whole stack (see :mod:`lstmkit.kernels.contract`)."""
    call = _Call(family, config, weights, training)
    hx = state_tensors(state)
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

    def __init__(self, family: Family, config: LayerConfig, weights, training: bool):
        self.op, self.family = family.torch.op(config.cell), family
        self.tuple_state = len(family.state(config.cell)) > 1  # torch.lstm takes [h, c]
        self.args = (_flat(weights), config.cell.bias, config.num_layers, config.dropout,
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


DECLARATION = Declaration(
    families={key: family.torch.options for key, family in FAMILIES.items() if family.torch},
    features=frozenset({"lengths", "bidirectional", "dropout"}))
"""What torch.nn computes; a family registered later is not declared (refused)."""

BACKEND = Backend(name="native", declaration=DECLARATION, stack=stack)
