"""Layers: time, stacking, direction, lengths and dropout around the cells."""

from lstmkit.config import LayerConfig
from lstmkit.layers.base import RecurrentLayer
from lstmkit.layers.gru import GRU
from lstmkit.layers.lstm import LSTM
from lstmkit.layers.rnn import RNN

LAYERS: dict[str, type[RecurrentLayer]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
"""Cell mode -> layer class."""


def layer_from_config(config: LayerConfig, device=None, dtype=None) -> RecurrentLayer:
    """The layer of ``config``'s family (an :class:`LSTM`, :class:`GRU` or :class:`RNN`)."""
    layer = LAYERS[config.cell.mode].__new__(LAYERS[config.cell.mode])
    RecurrentLayer.__init__(layer, config, device, dtype)
    return layer


__all__ = ["GRU", "LAYERS", "LSTM", "RNN", "RecurrentLayer", "layer_from_config"]
