"""Cells: single recurrent steps, one file per family, each with its plain-PyTorch reference."""

from lstmkit.cells import gru, lstm, rnn
from lstmkit.cells.base import Family, RecurrentCell
from lstmkit.cells.gru import GRUCell
from lstmkit.cells.lstm import LSTMCell, LSTMState
from lstmkit.cells.rnn import RNNCell

FAMILIES: dict[str, Family] = {"lstm": lstm.FAMILY, "gru": gru.FAMILY, "rnn": rnn.FAMILY}
"""Cell mode -> its step functions."""

__all__ = ["FAMILIES", "Family", "GRUCell", "LSTMCell", "LSTMState", "RNNCell", "RecurrentCell"]
