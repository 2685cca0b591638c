"""What every cell family shares: the :class:`Family` that owns everything family-specific, the
declarations of what another implementation computes (:func:`uncovered`), state handling, and
the cell module built from a config.

A family is one module (``cells/<family>.py``) that defines its config class, its equations and
reference step, and one :class:`Family` instance; :mod:`lstmkit.cells` registers it in one line.
Layers, backends, the exporter, the runtime and the streaming engine ask the family, never
compare its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lstmkit._checks import check_batch_size, check_shape, check_tensor
from lstmkit.config import CellConfig, changed_fields


class _Any:
    """An option declared for every value its config accepts."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()

Options = Mapping[str, object]
"""A declaration of options: option name -> a tuple of the values covered, or :data:`ANY`."""


def uncovered(cfg: CellConfig, options: Options) -> str | None:
    """Why a declaration ``options`` does not cover ``cfg``, or None when it does.

    The rule fails closed: every field of the family's config (sizes and ``init_fields`` aside)
    must be declared, and its value must be among the declared ones. A field added to a family
    later is refused by every declaration until that declaration names it, even at its default:
    only the author of an implementation knows whether it computes the new field.
    """
    for name, value in cfg.options.items():
        if name in cfg.init_fields:
            continue
        if name not in options:
            return f"option {name!r} of the {cfg.family!r} family is not declared"
        allowed = options[name]
        if allowed is not ANY and value not in allowed:
            return f"{name}={value!r} is not covered (declared: {', '.join(map(repr, allowed))})"
    return None


@dataclass(frozen=True)
class TorchEquivalent:
    """The torch.nn module and fused op that compute some of a family's configurations."""

    module: type[nn.Module]
    """``torch.nn.LSTM``, ...: what ``to_torch`` builds and ``from_torch`` accepts."""
    mode: Callable[[CellConfig], str]
    """cfg -> torch.nn's ``mode`` attribute ("LSTM", "RNN_TANH", ...)."""
    op: Callable[[CellConfig], Callable]
    """cfg -> the fused op with ``torch.lstm``'s signature (torch.lstm, torch.gru, ...)."""
    options: Options
    """The configurations torch computes exactly, as a declaration (see :func:`uncovered`)."""


@dataclass(frozen=True)
class OnnxMapping:
    """How a family's layer becomes ONNX's own recurrent operator, or a Scan over its step."""

    operator: str | None
    """ONNX's operator ("LSTM", "GRU", "RNN"); None for a family that none computes (every
    layer becomes a Scan)."""
    gates: tuple[str, ...]
    """ONNX's order of the gate blocks, in the family's gate names."""
    options: Options
    """The configurations the operator computes (others become a Scan)."""
    attributes: Callable[[CellConfig, int], dict]
    """(cfg, directions) -> the operator's attributes beyond hidden_size and direction."""
    step: Callable
    """(body, cfg, w, state names, x_t) -> new state names (with the family's ``step_output``:
    (h_t's name, new state names)): one step in a Scan body, built with
    ``body.op``/``body.const``/``body.act``/``body.gate_term``/``body.split``; ``w`` maps a
    parameter name to the body's name of it (as ``arrays`` gives it)."""
    extra_inputs: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    """Operator inputs after the initial state: (parameter, its block order, ONNX's order)."""
    arrays: Callable | None = None
    """(cfg, parameters as NumPy arrays by name) -> the arrays a Scan step reads, by name; None:
    the parameters with their matrices (2-D) transposed."""


@dataclass(frozen=True)
class Family:
    """Everything one cell family owns. Shapes use the family's own symbols (see its module)."""

    key: str
    """Its name in the registry and in saved configs: "lstm"."""
    config: type[CellConfig]
    """Its frozen config class."""
    gates: tuple[str, ...]
    """The gate blocks of its G*H tensors, in order ("i", "f", "g", "o")."""
    state: Callable[[CellConfig], dict[str, tuple[int, ...]]]
    """cfg -> state tensor name -> trailing shape (any rank): ``{"h": (P,), "c": (H,)}``.
    The first tensor is the cell's output h_t, unless ``step_output``."""
    make_state: Callable
    """(tensors in ``state`` order) -> a state: an LSTMState, or the tensor h itself."""
    parameters: Callable[[CellConfig], dict[str, tuple[int, ...]]]
    """cfg -> parameter name -> shape, in torch.nn's order (torch.nn's own tensors first)."""
    init: Callable[[CellConfig, dict[str, torch.Tensor]], None]
    """(cfg, parameters by name) -> None: initialise them in place."""
    input: Callable
    """(x (..., I), weights by name, cfg) -> the input term (..., G*H), all steps at once."""
    step: Callable
    """(input term (B, G*H), state, weights by name, cfg) -> the new state, or with
    ``step_output`` (h_t (B, P), the new state)."""
    torch: TorchEquivalent | None = None
    """Its torch.nn equivalent, or None."""
    onnx: OnnxMapping | None = None
    """Its ONNX mapping, or None: export refuses the family."""
    step_output: bool = False
    """Whether ``step`` returns h_t beside the state: for a family whose output is not part of
    its recurrence (xLSTM's mLSTM: the state is its memory C, n, m). Such a family has no
    h_{t-1} for recurrent dropout to drop."""
    option_sets: tuple[dict, ...] = field(default=({},))
    """Representative options (keyword arguments of ``config``) that together use every option
    at least once: what the conformance table runs through every backend."""

    def state_shapes(self, cfg: CellConfig) -> tuple[tuple[int, ...], ...]:
        return tuple(self.state(cfg).values())

    def state_names(self, cfg: CellConfig) -> tuple[str, ...]:
        return tuple(self.state(cfg))

    def torch_computes(self, cfg: CellConfig) -> bool:
        """Whether torch.nn's module computes ``cfg`` exactly."""
        return self.torch is not None and uncovered(cfg, self.torch.options) is None


def state_tensors(state) -> tuple[torch.Tensor, ...]:
    """The tensors of a state: (h, c) for an LSTM, (h,) for a GRU or RNN."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def zero_state(family: Family, cfg: CellConfig, leading: tuple[int, ...], like: torch.Tensor):
    """A state of zeros, each tensor of shape ``leading + its trailing shape``."""
    return family.make_state(*(like.new_zeros(leading + shape)
                               for shape in family.state_shapes(cfg)))


def check_state(family: Family, cfg: CellConfig, state, leading: tuple[int, ...],
                like: torch.Tensor, name: str = "state"):
    """Validate a user's state and return it as the family's state type."""
    spec = family.state(cfg)
    names = tuple(spec)
    if len(names) == 1:
        tensors = (state,)
    elif isinstance(state, (tuple, list)) and len(state) == len(names):
        tensors = tuple(state)
    else:
        raise TypeError(f"{name}: expected a tuple ({', '.join(names)}), got {type(state).__name__}"
                        + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
    for part, tensor in zip(names, tensors):
        label = f"{name}.{part}" if len(names) > 1 else name
        check_tensor(label, tensor, like)
        check_shape(label, tensor, leading + spec[part])
    return family.make_state(*tensors)


class RecurrentCell(nn.Module):
    """A single step ``(x_t, state) -> state``; the new output h_t is the state's first tensor
    (a family with ``step_output`` returns ``(h_t, state)``).

    Subclasses set ``family``. Parameters are created from the config in torch.nn's order.
    """

    family: Family

    def __init__(self, config: CellConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        for name, shape in self.family.parameters(config).items():
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
        self.family.init(self.config, dict(self.named_parameters(recurse=False)))

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters(recurse=False))

    def init_state(self, batch_size: int | None = None):
        """Zeros of shape (B, ...) per state tensor, or without B with ``batch_size=None``."""
        check_batch_size(batch_size)
        leading = () if batch_size is None else (batch_size,)
        return zero_state(self.family, self.config, leading, self.weight_ih)

    def forward(self, x: torch.Tensor, state=None):
        """One step. Shape: x (B, I) or unbatched (I,); returns the new state (see the class)."""
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
               if k not in ("input_size", "hidden_size")}
    options.update(more)
    return ", ".join([f"{cell.input_size}, {cell.hidden_size}"]
                     + [f"{k}={v!r}" for k, v in options.items()])
