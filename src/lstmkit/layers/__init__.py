"""Layers: time, stacking, direction, lengths and dropout around the cells."""

from lstmkit.config import LayerConfig
from lstmkit.layers.base import RecurrentLayer
from lstmkit.layers.gru import GRU
from lstmkit.layers.lstm import LSTM
from lstmkit.layers.rnn import RNN

LAYERS: dict[str, type[RecurrentLayer]] = {cls.family.key: cls for cls in (LSTM, GRU, RNN)}
"""Family key -> the layer class with torch.nn's constructor; other families use
:class:`RecurrentLayer` itself."""


def layer_from_config(config: LayerConfig, device=None, dtype=None) -> RecurrentLayer:
    """The layer of ``config``'s family (an :class:`LSTM`, :class:`GRU`, :class:`RNN`, or a
    :class:`RecurrentLayer` for a family without a class of its own)."""
    cls = LAYERS.get(config.cell.family, RecurrentLayer)
    layer = cls.__new__(cls)
    RecurrentLayer.__init__(layer, config, device, dtype)
    return layer


__all__ = ["GRU", "LAYERS", "LSTM", "RNN", "RecurrentLayer", "layer_from_config"]
