"""The LSTM layer: a drop-in for ``torch.nn.LSTM`` that also runs every LSTM variant."""

from __future__ import annotations

from lstmkit.cells import lstm
from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers.base import RecurrentLayer


class LSTM(RecurrentLayer):
    """A multi-layer LSTM over a sequence; equations in :mod:`lstmkit.cells.lstm`.

    The first ten arguments are torch.nn.LSTM's, in its order, with its meaning.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, device, dtype: as ``torch.nn.LSTM``.
        recurrent_dropout: variational dropout of h_{t-1} (see :class:`LayerConfig`).
        zoneout: zoneout probability of h and c (see :class:`LayerConfig`).
        backend: "auto", "native", "reference" or another name from ``lstmkit.kernels.names()``.
        **options: the LSTM fields of :class:`~lstmkit.config.CellConfig`: ``peephole``,
            ``coupled``, ``cell_clip``, ``gate_activation``, ``cell_activation``,
            ``output_activation``, ``layer_norm``, ``forget_bias``, ``input_bias``, ``chrono``.

    Shape:
        input (T, B, I), or (B, T, I) with ``batch_first``, or (T, I); output (T, B, D*P);
        state ``LSTMState(h, c)`` with h (L*D, B, P), c (L*D, B, H), where D is 2 if
        bidirectional else 1 and P is proj_size or H.

    Examples:
        >>> import torch
        >>> lstm = LSTM(8, 16, num_layers=2, batch_first=True, peephole=True)
        >>> y, (h, c) = lstm(torch.randn(4, 10, 8))
        >>> tuple(y.shape), tuple(h.shape)
        ((4, 10, 16), (2, 4, 16))
    """

    family = lstm.FAMILY

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, backend: str = "auto", **options):
        cell = cell_config("lstm", input_size, hidden_size, bias, proj_size=proj_size, **options)
        config = LayerConfig(cell, num_layers, batch_first, dropout, bidirectional,
                             recurrent_dropout, zoneout, backend)
        super().__init__(config, device, dtype)

    @staticmethod
    def _torch_arguments(m) -> dict:
        return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
                    bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
                    bidirectional=m.bidirectional, proj_size=m.proj_size)
