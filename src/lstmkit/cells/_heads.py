"""What the two xLSTM families share: headed sizes, the forget-gate choice, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lstmkit.config import CellConfig

FORGET_GATES = ("sigmoid", "exp")
"""The forget gate's activation: sigmoid (NX-AI's and the paper's default) or exp."""


def log_forget(f: torch.Tensor, forget: str) -> torch.Tensor:
    """log f_t from the pre-activation f~_t."""
    return F.logsigmoid(f) if forget == "sigmoid" else f


def onnx_log_forget(body, f: str, forget: str) -> str:
    """log f_t from f~_t in an ONNX graph: log sigmoid(f~) = min(f~, 0) - log(1 + exp(-|f~|)),
    which neither overflows nor loses the tail, or f~ itself."""
    if forget != "sigmoid":
        return f
    tail = body.op("Log", body.op("Add", body.const(np.float32(1.0)),
                                  body.op("Exp", body.op("Neg", body.op("Abs", f)))))
    return body.op("Sub", body.op("Min", f, body.const(np.float32(0.0))), tail)


def require_positive_ints(config, names) -> None:
    """Each field in ``names`` of ``config`` must be an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def check_headed(config) -> None:
    """The checks an sLSTM or mLSTM config adds to :class:`CellConfig`'s (sizes, bias): heads
    that divide H, the forget gate."""
    require_positive_ints(config, ("num_heads",))
    if config.hidden_size % config.num_heads:
        raise ValueError(f"hidden_size: expected a multiple of num_heads={config.num_heads}, "
                         f"got {config.hidden_size}")
    if config.forget not in FORGET_GATES:
        raise ValueError(f"forget: expected one of {FORGET_GATES}, got {config.forget!r}")


@dataclass(frozen=True)
class HeadedConfig(CellConfig):
    """The fields an sLSTM and an mLSTM config share beyond :class:`CellConfig`'s (input_size,
    hidden_size H = NH * D, bias: whether the input projection has one); each family adds its
    own after them."""

    num_heads: int = 4
    """Heads NH, each of D = H / NH units."""
    forget: str = "sigmoid"
    """Forget-gate activation: "sigmoid" (NX-AI's, the paper's default) or "exp"."""

    def __post_init__(self):
        super().__post_init__()
        check_headed(self)

    @property
    def head_size(self) -> int:
        """D = H / NH."""
        return self.hidden_size // self.num_heads
