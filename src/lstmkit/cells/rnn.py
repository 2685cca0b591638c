r"""The Elman RNN cell (Elman 1990), as torch.nn.RNN.

One step::

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

where x_t is the input (I), h_{t-1} the previous state (H) and act is tanh or relu
(``nonlinearity``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lstmkit.cells.base import Family, RecurrentCell
from lstmkit.cells.weights import CellWeights
from lstmkit.config import CellConfig


def rnn_input(x: torch.Tensor, w: CellWeights, cfg: CellConfig) -> torch.Tensor:
    """The input term ``W_ih x + b_ih``. Shape: x (..., I) -> (..., H)."""
    return F.linear(x, w.weight_ih, w.bias_ih)


def rnn_step(gx: torch.Tensor, h: torch.Tensor, w: CellWeights, cfg: CellConfig) -> torch.Tensor:
    """One step from the input term ``gx`` (B, H) and the state ``h`` (B, H)."""
    a = gx + F.linear(h, w.weight_hh, w.bias_hh)
    return torch.relu(a) if cfg.nonlinearity == "relu" else torch.tanh(a)


FAMILY = Family(input=rnn_input, step=rnn_step, state_names=("h",), make_state=lambda h: h)


class RNNCell(RecurrentCell):
    """One Elman step; a drop-in for ``torch.nn.RNNCell`` (same argument order).

    Returns the new h. Shape: x (B, I) or (I,); h (B, H) or (H,).
    """

    family = FAMILY

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None):
        config = CellConfig("rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity)
        super().__init__(config, device, dtype)
