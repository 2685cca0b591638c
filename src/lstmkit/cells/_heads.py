"""What the two xLSTM families share: headed sizes, the forget-gate choice, and their checks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FORGET_GATES = ("sigmoid", "exp")
"""The forget gate's activation: sigmoid (NX-AI's and the paper's default) or exp."""


def log_forget(f: torch.Tensor, forget: str) -> torch.Tensor:
    """log f_t from the pre-activation f~_t."""
    return F.logsigmoid(f) if forget == "sigmoid" else f


def require_positive_ints(config, names) -> None:
    """Each field in ``names`` of ``config`` must be an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def check_headed(config) -> None:
    """The checks of an sLSTM or mLSTM config: sizes, heads that divide H, forget, bias."""
    require_positive_ints(config, ("input_size", "hidden_size", "num_heads"))
    if config.hidden_size % config.num_heads:
        raise ValueError(f"hidden_size: expected a multiple of num_heads={config.num_heads}, "
                         f"got {config.hidden_size}")
    if config.forget not in FORGET_GATES:
        raise ValueError(f"forget: expected one of {FORGET_GATES}, got {config.forget!r}")
    if not isinstance(config.bias, bool):
        raise TypeError(f"bias: expected a bool, got {type(config.bias).__name__}")


@dataclass(frozen=True)
class HeadedConfig:
    """The fields an sLSTM and an mLSTM config share; each family adds its own after them."""

    input_size: int
    """Features of each input step, I."""
    hidden_size: int
    """Units of h, H = NH * D."""
    bias: bool = True
    """Whether the input projection has a bias (third, as in every lstmkit cell config)."""
    num_heads: int = 4
    """Heads NH, each of D = H / NH units."""
    forget: str = "sigmoid"
    """Forget-gate activation: "sigmoid" (NX-AI's, the paper's default) or "exp"."""

    def __post_init__(self):
        check_headed(self)

    @property
    def head_size(self) -> int:
        """D = H / NH."""
        return self.hidden_size // self.num_heads

    @property
    def output_size(self) -> int:
        return self.hidden_size
