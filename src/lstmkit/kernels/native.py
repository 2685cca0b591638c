"""The native backend: torch's own fused kernels (oneDNN on CPU, cuDNN on GPU).

It runs exactly the configurations torch.nn.LSTM/GRU/RNN compute (no variant, no recurrent
dropout or zoneout), so for those a drop-in lstmkit layer gives torch.nn's numbers bit for bit.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmkit.cells import FAMILIES
from lstmkit.cells.base import state_tensors
from lstmkit.config import LayerConfig
from lstmkit.kernels import Backend

_OPS = {"lstm": torch.lstm, "gru": torch.gru,
        "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}


def _op(config: LayerConfig):
    mode = config.cell.mode
    return _OPS[f"rnn_{config.cell.nonlinearity}" if mode == "rnn" else mode]


def _flat(weights) -> list[torch.Tensor]:
    """torch.nn's ``_flat_weights`` order: per layer and direction w_ih, w_hh, b_ih, b_hh, w_hr."""
    return [t for layer in weights for w in layer
            for t in (w.weight_ih, w.weight_hh, w.bias_ih, w.bias_hh, w.weight_hr) if t is not None]


def run(config: LayerConfig, weights, x, state, lengths, training):
    op, family = _op(config), FAMILIES[config.cell.mode]
    hx = state_tensors(state)
    args = (_flat(weights), config.cell.bias, config.num_layers, config.dropout, training,
            config.bidirectional)
    hx_arg = hx if config.cell.mode == "lstm" else hx[0]
    if lengths is None:
        out, *final = op(x, hx_arg, *args, False)
        return out, family.make_state(*final)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    hx_sorted = tuple(h.index_select(1, order) for h in hx)
    data, *final = op(packed.data, packed.batch_sizes,
                      hx_sorted if config.cell.mode == "lstm" else hx_sorted[0], *args)
    out, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, order, unorder),
                                 total_length=x.shape[0])
    return out, family.make_state(*(h.index_select(1, unorder) for h in final))


def supports(config: LayerConfig, device, dtype, training) -> str | None:
    if not config.is_torch_compatible:
        return "a variant torch.nn does not compute (only plain LSTM/GRU/RNN)"
    return None


BACKEND = Backend(name="native", run=run, supports=supports)
