"""The GRU layer: a drop-in for ``torch.nn.GRU``, with the paper's form as an option."""

from __future__ import annotations

from lstmkit.cells import gru
from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers.base import RecurrentLayer


class GRU(RecurrentLayer):
    """A multi-layer GRU over a sequence; equations in :mod:`lstmkit.cells.gru`.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            device, dtype: as ``torch.nn.GRU``.
        reset_after: torch.nn's form (True) or the paper's (False).
        recurrent_dropout, zoneout, backend: as :class:`~lstmkit.LSTM`.

    Shape: input (T, B, I) (or batch-first, or unbatched); output (T, B, D*H); state h
    (L*D, B, H), a tensor as in torch.nn.
    """

    family = gru.FAMILY

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, reset_after: bool = True,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0, backend: str = "auto"):
        cell = cell_config("gru", input_size, hidden_size, bias, reset_after=reset_after)
        config = LayerConfig(cell, num_layers, batch_first, dropout, bidirectional,
                             recurrent_dropout, zoneout, backend)
        super().__init__(config, device, dtype)

    @staticmethod
    def _torch_arguments(m) -> dict:
        return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
                    bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
                    bidirectional=m.bidirectional)
