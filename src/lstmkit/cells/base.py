"""What the three cell families share: the :class:`Family` table entry, state handling, and the
cell module built from a config."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from lstmkit._checks import check_batch_size, check_shape, check_tensor
from lstmkit.cells.weights import CellWeights, parameter_shapes, reset_parameters
from lstmkit.config import CellConfig, changed_fields


class Family(NamedTuple):
    """A cell family's pure functions: the reference kernel and the cell modules both use them."""

    input: Callable
    """(x (..., I), weights, config) -> the gates' input term (..., G*H), all steps at once."""
    step: Callable
    """(input term (B, G*H), state, weights, config) -> the new state."""
    state_names: tuple[str, ...]
    """Names of the state's tensors: ("h", "c") for an LSTM, ("h",) for the others."""
    make_state: Callable
    """(tensors in ``state_names`` order) -> a state: an LSTMState, or the tensor h itself."""


def state_sizes(cfg: CellConfig) -> tuple[int, ...]:
    """Last-dimension size of each state tensor: (P, H) for an LSTM, (H,) for the others."""
    return (cfg.output_size, cfg.hidden_size) if cfg.mode == "lstm" else (cfg.hidden_size,)


def state_tensors(state) -> tuple[torch.Tensor, ...]:
    """The tensors of a state: (h, c) for an LSTM, (h,) for the others."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def zero_state(family: Family, cfg: CellConfig, leading: tuple[int, ...], like: torch.Tensor):
    """A state of zeros, each tensor of shape ``leading + (size,)``."""
    return family.make_state(*(like.new_zeros(leading + (size,)) for size in state_sizes(cfg)))


def check_state(family: Family, cfg: CellConfig, state, leading: tuple[int, ...],
                like: torch.Tensor, name: str = "state"):
    """Validate a user's state and return it as the family's state type."""
    names, sizes = family.state_names, state_sizes(cfg)
    if len(names) == 1:
        tensors = (state,)
    elif isinstance(state, (tuple, list)) and len(state) == len(names):
        tensors = tuple(state)
    else:
        raise TypeError(f"{name}: expected a tuple ({', '.join(names)}), got {type(state).__name__}"
                        + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
    for part, tensor, size in zip(names, tensors, sizes):
        label = f"{name}.{part}" if len(names) > 1 else name
        check_tensor(label, tensor, like)
        check_shape(label, tensor, leading + (size,))
    return family.make_state(*tensors)


class RecurrentCell(nn.Module):
    """A single step ``(x_t, state) -> state``; the new output h_t is the state's h.

    Subclasses set ``family``. Parameters are created from the config in torch.nn's order.
    """

    family: Family

    def __init__(self, config: CellConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        for name, shape in parameter_shapes(config).items():
            tensor = torch.empty(shape, device=device, dtype=dtype)
            self.register_parameter(name, nn.Parameter(tensor))
        self.reset_parameters()

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def reset_parameters(self) -> None:
        reset_parameters(self.config, dict(self.named_parameters(recurse=False)))

    def weights(self) -> CellWeights:
        return CellWeights(**dict(self.named_parameters(recurse=False)))

    def init_state(self, batch_size: int | None = None):
        """Zeros of shape (B, size) per state tensor, or (size,) with ``batch_size=None``."""
        check_batch_size(batch_size)
        leading = () if batch_size is None else (batch_size,)
        return zero_state(self.family, self.config, leading, self.weight_ih)

    def forward(self, x: torch.Tensor, state=None):
        """One step. Shape: x (B, I) or unbatched (I,); returns the new state."""
        check_tensor("input", x, self.weight_ih)
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x.shape)}")
        leading = tuple(x.shape[:-1])
        if state is None:
            state = zero_state(self.family, self.config, leading, self.weight_ih)
        else:
            state = check_state(self.family, self.config, state, leading, self.weight_ih)
        w = self.weights()
        return self.family.step(self.family.input(x, w, self.config), state, w, self.config)

    def extra_repr(self) -> str:
        return config_repr(self.config)


def map_state(family: Family, fn: Callable, *states):
    """Apply ``fn`` tensor by tensor across states of one family: ``fn(h1, h2)``, ``fn(c1, c2)``."""
    return family.make_state(*(fn(*parts) for parts in zip(*map(state_tensors, states))))


def hidden(state) -> torch.Tensor:
    """The h of a state (what the cell outputs)."""
    return state_tensors(state)[0]


def config_repr(cell: CellConfig, **more) -> str:
    """``"I, H, option=value, ..."`` with only the options that differ from their defaults."""
    options = {k: v for k, v in changed_fields(cell).items()
               if k not in ("mode", "input_size", "hidden_size")}
    options.update(more)
    return ", ".join([f"{cell.input_size}, {cell.hidden_size}"]
                     + [f"{k}={v!r}" for k, v in options.items()])
