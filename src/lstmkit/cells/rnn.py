r"""The Elman RNN cell (Elman 1990), as torch.nn.RNN.

One step::

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

where x_t is the input (I), h_{t-1} the previous state (H) and act is tanh or relu
(``nonlinearity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.cells.base import ANY, Family, OnnxMapping, RecurrentCell, TorchEquivalent
from lstmkit.cells.weights import torch_parameters, uniform_init
from lstmkit.config import CellConfig, cell_config

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass(frozen=True)
class RNNConfig(CellConfig):
    """What one Elman step computes."""

    family: ClassVar[str] = "rnn"

    nonlinearity: str = "tanh"
    """``"tanh"`` or ``"relu"``."""

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.nonlinearity, str) or self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {self.nonlinearity!r}")


def rnn_input(x: torch.Tensor, w: dict, cfg: RNNConfig) -> torch.Tensor:
    """The input term ``W_ih x + b_ih``. Shape: x (..., I) -> (..., H)."""
    return F.linear(x, w["weight_ih"], w.get("bias_ih"))


def rnn_step(gx: torch.Tensor, h: torch.Tensor, w: dict, cfg: RNNConfig) -> torch.Tensor:
    """One step from the input term ``gx`` (B, H) and the state ``h`` (B, H)."""
    return NONLINEARITIES[cfg.nonlinearity](gx + F.linear(h, w["weight_hh"], w.get("bias_hh")))


def onnx_step(body, cfg: RNNConfig, w: dict, state: list[str], x: str) -> list[str]:
    """One step in an ONNX Scan body (see :class:`~lstmkit.cells.base.OnnxMapping`)."""
    a = body.op("Add", body.gate_term(x, w["weight_ih"], w.get("bias_ih")),
                body.gate_term(state[0], w["weight_hh"], w.get("bias_hh")))
    return [body.act(cfg.nonlinearity, a)]


_OPS = {"tanh": torch.rnn_tanh, "relu": torch.rnn_relu}

FAMILY = Family(
    key="rnn", config=RNNConfig, gates=("h",),
    state=lambda cfg: {"h": (cfg.hidden_size,)}, make_state=lambda h: h,
    parameters=lambda cfg: torch_parameters(cfg, 1), init=uniform_init,
    input=rnn_input, step=rnn_step,
    torch=TorchEquivalent(nn.RNN, mode=lambda cfg: f"RNN_{cfg.nonlinearity.upper()}",
                          op=lambda cfg: _OPS[cfg.nonlinearity],
                          options={"bias": ANY, "nonlinearity": ANY}),
    onnx=OnnxMapping(operator="RNN", gates=("h",), options={"bias": ANY, "nonlinearity": ANY},
                     attributes=lambda cfg, d: {
                         "activations": [cfg.nonlinearity.capitalize()] * d},
                     step=onnx_step),
    option_sets=({}, {"bias": False}, {"nonlinearity": "relu"}),
)


class RNNCell(RecurrentCell):
    """One Elman step; a drop-in for ``torch.nn.RNNCell`` (same argument order).

    Returns the new h. Shape: x (B, I) or (I,); h (B, H) or (H,).
    """

    family = FAMILY

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None):
        config = cell_config("rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity)
        super().__init__(config, device, dtype)
