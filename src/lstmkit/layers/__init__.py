"""Layers: time, stacking, direction, lengths and dropout around the cells."""

from lstmkit.layers.base import RecurrentLayer
from lstmkit.layers.gru import GRU
from lstmkit.layers.lstm import LSTM
from lstmkit.layers.rnn import RNN

__all__ = ["GRU", "LSTM", "RNN", "RecurrentLayer"]
