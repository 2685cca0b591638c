"""Frozen configurations of cells and layers.

A :class:`CellConfig` says what one recurrent step computes; a :class:`LayerConfig` adds what a
layer owns: time, stacking, direction and dropout. Both check their fields once, at construction,
with "expected X, got Y" messages, so nothing downstream has to.
"""

from __future__ import annotations

import numbers
from dataclasses import MISSING, asdict, dataclass, fields, replace

from lstmkit.activations import ACTIVATIONS

MODES = ("lstm", "gru", "rnn")
"""The cell families: LSTM, GRU and the Elman RNN."""

GATE_COUNT = {"lstm": 4, "gru": 3, "rnn": 1}
"""Rows of ``weight_ih`` per hidden unit: LSTM ``i, f, g, o``; GRU ``r, z, n``; RNN one."""


def _require_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")


def _require_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def _require_probability(name: str, value, closed: bool = False) -> None:
    """A float in [0, 1), or [0, 1] with ``closed``."""
    interval = "[0, 1]" if closed else "[0, 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float in {interval}, got {type(value).__name__}")
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name}: expected a float in {interval}, got {value}")


def _require_activation(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str from {sorted(ACTIVATIONS)}, "
                        f"got {type(value).__name__}")
    if value not in ACTIVATIONS:
        raise ValueError(f"{name}: expected one of {sorted(ACTIVATIONS)}, got {value!r}")


@dataclass(frozen=True)
class CellConfig:
    """What one recurrent step computes."""

    mode: str
    """Cell family: ``"lstm"``, ``"gru"`` or ``"rnn"``."""
    input_size: int
    """Features of each input step, I."""
    hidden_size: int
    """Units of the cell state and of the hidden state before projection, H."""
    bias: bool = True
    """Whether the cell has ``bias_ih`` and ``bias_hh``."""
    proj_size: int = 0
    """LSTM only: project h to this many units with ``weight_hr`` (0: no projection)."""
    nonlinearity: str = "tanh"
    """RNN only: ``"tanh"`` or ``"relu"``."""
    peephole: bool = False
    """LSTM only: gates i and f see c_{t-1}, gate o sees c_t (Gers & Schmidhuber 2000)."""
    coupled: bool = False
    """LSTM only: the forget gate is tied to the input gate, f = 1 - i (CIFG, ONNX
    ``input_forget``)."""
    input_gate: bool = True
    """LSTM only: False fixes i = 1 (Greff et al.'s NIG)."""
    forget_gate: bool = True
    """LSTM only: False fixes f = 1, the original 1997 LSTM without a forget gate (NFG)."""
    output_gate: bool = True
    """LSTM only: False fixes o = 1 (NOG)."""
    cell_clip: float | None = None
    """LSTM only: clip the gate pre-activations to [-clip, clip] (ONNX ``clip``)."""
    gate_activation: str = "sigmoid"
    """LSTM only: the activation of gates i, f, o (ONNX's f)."""
    cell_activation: str = "tanh"
    """LSTM only: the activation of the candidate g (ONNX's g)."""
    output_activation: str = "tanh"
    """LSTM only: the activation applied to c_t before the output gate (ONNX's h)."""
    layer_norm: bool = False
    """LSTM only: layer normalisation of the gate pre-activations and of c_t (Ba et al. 2016)."""
    reset_after: bool = True
    """GRU only: the reset gate multiplies after the recurrent product (torch.nn; ONNX
    ``linear_before_reset=1``); False is the paper's form, r multiplies h before it."""
    forget_bias: float | None = None
    """LSTM only: initial total forget-gate bias (``bias_ih`` gets it, ``bias_hh`` 0)."""
    input_bias: float | None = None
    """LSTM only: initial total input-gate bias, like ``forget_bias``."""
    chrono: int | None = None
    """LSTM only: chrono initialisation for dependencies up to this many steps (T_max):
    forget bias log(U[1, T_max - 1]), input bias its negative (Tallec & Ollivier 2018)."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        _require_int("input_size", self.input_size, 1)
        _require_int("hidden_size", self.hidden_size, 1)
        _require_bool("bias", self.bias)
        _require_int("proj_size", self.proj_size, 0)
        for name in ("peephole", "coupled", "layer_norm", "reset_after", "input_gate",
                     "forget_gate", "output_gate"):
            _require_bool(name, getattr(self, name))
        for name in ("gate_activation", "cell_activation", "output_activation"):
            _require_activation(name, getattr(self, name))
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {self.nonlinearity!r}")
        self._check_lstm_options()
        self._check_init_options()

    def _check_lstm_options(self) -> None:
        if self.mode != "lstm":
            changed = [f.name for f in fields(CellConfig) if f.name in _LSTM_ONLY
                       and getattr(self, f.name) != f.default]
            if changed:
                raise ValueError(f"{', '.join(changed)}: expected only with mode 'lstm', "
                                 f"got mode {self.mode!r}")
        if self.mode != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: expected only with mode 'rnn', got mode {self.mode!r}")
        if self.mode != "gru" and not self.reset_after:
            raise ValueError(f"reset_after: expected only with mode 'gru', got mode {self.mode!r}")
        if self.proj_size and self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected 0 or less than hidden_size={self.hidden_size}, "
                             f"got {self.proj_size}")
        if self.coupled and not (self.input_gate and self.forget_gate):
            raise ValueError("coupled: expected input_gate=True and forget_gate=True (coupling "
                             "derives f from i), got a removed gate")
        if self.cell_clip is not None and not (
            isinstance(self.cell_clip, numbers.Real) and not isinstance(self.cell_clip, bool)
            and self.cell_clip > 0
        ):
            raise ValueError("cell_clip: expected None or a positive float, "
                             f"got {self.cell_clip!r}")

    def _check_init_options(self) -> None:
        wanted = [n for n in ("forget_bias", "input_bias", "chrono")
                  if getattr(self, n) is not None]
        if wanted and not self.bias:
            raise ValueError(f"{', '.join(wanted)}: expected bias=True, got bias=False")
        if self.chrono is not None:
            _require_int("chrono", self.chrono, 3)
            if self.forget_bias is not None or self.input_bias is not None:
                raise ValueError("chrono: expected without forget_bias/input_bias, got both")
        if self.coupled and self.input_bias is not None and self.forget_bias is not None:
            raise ValueError("forget_bias, input_bias: expected one of them with coupled=True "
                             "(f = 1 - i ties the two), got both")
        if self.forget_bias is not None and not (self.forget_gate or self.coupled):
            raise ValueError("forget_bias: expected forget_gate=True, got forget_gate=False")
        if self.input_bias is not None and not self.input_gate:
            raise ValueError("input_bias: expected input_gate=True, got input_gate=False")
        for name in ("forget_bias", "input_bias"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, numbers.Real)):
                raise TypeError(f"{name}: expected None or a float, got {type(value).__name__}")

    @property
    def gate_count(self) -> int:
        return GATE_COUNT[self.mode]

    @property
    def output_size(self) -> int:
        """Units of h_t: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def is_torch_compatible(self) -> bool:
        """True when torch.nn's own LSTM/GRU/RNN computes this cell."""
        return all(getattr(self, n) == f.default for f in fields(CellConfig)
                   if (n := f.name) in _VARIANT_FIELDS)


_LSTM_ONLY = frozenset({
    "proj_size", "peephole", "coupled", "input_gate", "forget_gate", "output_gate", "cell_clip",
    "gate_activation", "cell_activation", "output_activation", "layer_norm", "forget_bias",
    "input_bias", "chrono",
})
# Fields that change the computed function away from torch.nn's (the init options do not).
_VARIANT_FIELDS = frozenset({
    "peephole", "coupled", "input_gate", "forget_gate", "output_gate", "cell_clip",
    "gate_activation", "cell_activation", "output_activation", "layer_norm", "reset_after",
})


def changed_fields(config) -> dict:
    """The fields of a config whose values differ from their defaults (for reprs)."""
    return {f.name: getattr(config, f.name) for f in fields(config)
            if f.default is MISSING or getattr(config, f.name) != f.default}


@dataclass(frozen=True)
class LayerConfig:
    """A stack of recurrent layers over time: the cell plus what the layer owns."""

    cell: CellConfig
    """The cell of the first layer; deeper layers take the previous layer's output."""
    num_layers: int = 1
    """Layers stacked, each fed the previous layer's output sequence."""
    batch_first: bool = False
    """Inputs and outputs are (B, T, F) instead of (T, B, F); states are unaffected."""
    dropout: float = 0.0
    """Dropout on the output of every layer but the last, in training (as torch.nn)."""
    bidirectional: bool = False
    """Each layer also runs backwards in time; outputs of both directions are concatenated."""
    recurrent_dropout: float = 0.0
    """Variational dropout of h_{t-1} before the recurrent product: one mask per sequence,
    the same at every step (Gal & Ghahramani 2016). Training only."""
    zoneout: float = 0.0
    """Probability that each unit of h (and c) keeps its previous value at each step
    (Krueger et al. 2017). In evaluation the expectation is used."""
    backend: str = "auto"
    """Kernel that runs the recurrence: a name from ``lstmkit.kernels.names()`` or "auto"."""

    def __post_init__(self):
        if not isinstance(self.cell, CellConfig):
            raise TypeError(f"cell: expected a CellConfig, got {type(self.cell).__name__}")
        _require_int("num_layers", self.num_layers, 1)
        _require_bool("batch_first", self.batch_first)
        _require_bool("bidirectional", self.bidirectional)
        _require_probability("dropout", self.dropout, closed=True)  # as torch.nn
        _require_probability("recurrent_dropout", self.recurrent_dropout)
        _require_probability("zoneout", self.zoneout)
        if not isinstance(self.backend, str):
            raise TypeError(f"backend: expected a str, got {type(self.backend).__name__}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def layer_cell(self, layer: int) -> CellConfig:
        """The cell of layer ``layer``: deeper layers read the previous layer's output."""
        if layer == 0:
            return self.cell
        return replace(self.cell, input_size=self.cell.output_size * self.num_directions)

    @property
    def is_torch_compatible(self) -> bool:
        """True when ``torch.nn`` computes exactly this stack."""
        return (self.cell.is_torch_compatible and self.recurrent_dropout == 0.0
                and self.zoneout == 0.0)

    def to_dict(self) -> dict:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LayerConfig:
        data = dict(data)
        return cls(cell=CellConfig(**data.pop("cell")), **data)
