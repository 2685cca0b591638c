r"""The GRU cell (Cho et al. 2014), torch.nn's form by default.

One step, gate order ``r, z, n`` (:data:`~lstmkit.cells.weights.GRU_GATES`)::

    r   = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z   = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))       reset_after=True (torch.nn)
    n   = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)       reset_after=False (Cho et al.)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

where x_t is the input (I), h_{t-1} the previous state (H), W_i* the rows of ``weight_ih`` and
W_h* of ``weight_hh``. ``reset_after`` is ONNX's ``linear_before_reset``: torch.nn and cuDNN compute
the first form, the paper the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lstmkit.cells.base import Family, RecurrentCell
from lstmkit.cells.weights import CellWeights
from lstmkit.config import CellConfig


def gru_input(x: torch.Tensor, w: CellWeights, cfg: CellConfig) -> torch.Tensor:
    """The input term ``W_i x + b_i`` of the three gates. Shape: x (..., I) -> (..., 3H)."""
    return F.linear(x, w.weight_ih, w.bias_ih)


def gru_step(gx: torch.Tensor, h: torch.Tensor, w: CellWeights, cfg: CellConfig) -> torch.Tensor:
    """One step from the input term ``gx`` (B, 3H) and the state ``h`` (B, H)."""
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    w_hrz, w_hn = w.weight_hh.split([2 * cfg.hidden_size, cfg.hidden_size])
    b_hrz, b_hn = (None, None) if w.bias_hh is None else w.bias_hh.split(
        [2 * cfg.hidden_size, cfg.hidden_size])
    h_r, h_z = F.linear(h, w_hrz, b_hrz).chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    if cfg.reset_after:
        n = torch.tanh(x_n + r * F.linear(h, w_hn, b_hn))
    else:
        n = torch.tanh(x_n + F.linear(r * h, w_hn, b_hn))
    return (1.0 - z) * n + z * h


FAMILY = Family(input=gru_input, step=gru_step, state_names=("h",), make_state=lambda h: h)


class GRUCell(RecurrentCell):
    """One GRU step; a drop-in for ``torch.nn.GRUCell``.

    Args:
        input_size: features of x_t, I.
        hidden_size: units of h_t, H.
        bias: whether there are ``bias_ih`` and ``bias_hh``.
        device, dtype: where and how the parameters are made.
        reset_after: torch.nn's form (True) or the paper's (False); see the module docstring.

    Returns the new h. Shape: x (B, I) or (I,); h (B, H) or (H,).
    """

    family = FAMILY

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, *, reset_after: bool = True):
        config = CellConfig("gru", input_size, hidden_size, bias, reset_after=reset_after)
        super().__init__(config, device, dtype)
