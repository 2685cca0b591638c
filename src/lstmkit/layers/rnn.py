"""The Elman RNN layer: a drop-in for ``torch.nn.RNN``."""

from __future__ import annotations

from lstmkit.cells import rnn
from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers.base import RecurrentLayer


class RNN(RecurrentLayer):
    """A multi-layer Elman RNN over a sequence; equations in :mod:`lstmkit.cells.rnn`.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
            bidirectional, device, dtype: as ``torch.nn.RNN``, in its order.
        recurrent_dropout, zoneout, backend: as :class:`~lstmkit.LSTM`.

    Shape: input (T, B, I) (or batch-first, or unbatched); output (T, B, D*H); state h
    (L*D, B, H).
    """

    family = rnn.FAMILY

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0, backend: str = "auto"):
        cell = cell_config("rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity)
        config = LayerConfig(cell, num_layers, batch_first, dropout, bidirectional,
                             recurrent_dropout, zoneout, backend)
        super().__init__(config, device, dtype)

    @property
    def nonlinearity(self) -> str:
        return self.config.cell.nonlinearity

    @staticmethod
    def _torch_arguments(m) -> dict:
        return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
                    nonlinearity=m.nonlinearity, bias=m.bias, batch_first=m.batch_first,
                    dropout=m.dropout, bidirectional=m.bidirectional)
