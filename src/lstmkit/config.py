"""Frozen configurations of cells and layers.

A cell config says what one recurrent step computes. Every family has its own config class
(:class:`~lstmkit.cells.lstm.LSTMConfig`, :class:`~lstmkit.cells.gru.GRUConfig`,
:class:`~lstmkit.cells.rnn.RNNConfig`, ...), all derived from :class:`CellConfig`, which holds what
every family shares; :func:`cell_config` builds one from the family's key. A
:class:`LayerConfig` adds what a layer owns: time, stacking, direction and dropout. Both check
their fields once, at construction, with "expected X, got Y" messages, so nothing downstream has
to.
"""

from __future__ import annotations

import numbers
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import ClassVar

from lstmkit.activations import ACTIVATIONS


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


def _require_optional_real(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name}: expected None or a float, got {type(value).__name__}")


@dataclass(frozen=True)
class CellConfig:
    """What every family's step has: sizes and biases. Families subclass it with their options.

    A subclass sets ``family`` (its key in :data:`lstmkit.cells.FAMILIES`) and ``init_fields``
    (its options that only change the initial parameters, never the computed function: backends
    need not declare them).
    """

    family: ClassVar[str] = ""
    """The family's key, e.g. ``"lstm"``."""
    init_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that only affect initialisation."""

    input_size: int
    """Features of each input step, I."""
    hidden_size: int
    """Units of the cell state and of the hidden state before projection, H."""
    bias: bool = True
    """Whether the cell has ``bias_ih`` and ``bias_hh``."""

    def __post_init__(self):
        _require_int("input_size", self.input_size, 1)
        _require_int("hidden_size", self.hidden_size, 1)
        _require_bool("bias", self.bias)

    @property
    def output_size(self) -> int:
        """Units of h_t (what the next layer and the head read)."""
        return self.hidden_size

    @property
    def options(self) -> dict:
        """The family's own fields (everything but the sizes), name -> value."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("input_size", "hidden_size")}

    def to_dict(self) -> dict:
        """A JSON-ready dict with the family's key; :func:`cell_from_dict` inverts it."""
        return {"family": self.family, **asdict(self)}


def cell_config(family: str, input_size: int, hidden_size: int, bias: bool = True,
                **options) -> CellConfig:
    """The config of family ``family`` (a key of :data:`lstmkit.cells.FAMILIES`).

    Examples:
        >>> cell_config("lstm", 3, 8, peephole=True).peephole
        True
    """
    from lstmkit.cells import family_of

    config_class = family_of(family).config
    known = {f.name for f in fields(config_class)}
    unknown = [name for name in options if name not in known]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: expected options of the {family!r} family "
                         f"({', '.join(sorted(known - {'input_size', 'hidden_size'}))}), got "
                         + ", ".join(f"{name}={options[name]!r}" for name in unknown))
    return config_class(input_size, hidden_size, bias, **options)


def cell_from_dict(data: dict) -> CellConfig:
    """The config :meth:`CellConfig.to_dict` wrote. A format-1 dict (``"mode"`` naming the family
    and every family's fields at their defaults) still loads: the other families' fields are
    dropped (format 1 refused any of them away from its default)."""
    from lstmkit.cells import family_of

    data = dict(data)
    if "family" in data:
        config_class = family_of(data.pop("family")).config
    elif "mode" in data:  # lstmkit.checkpoint/1
        config_class = family_of(data.pop("mode")).config
        known = {f.name for f in fields(config_class)}
        data = {k: v for k, v in data.items() if k in known}
    else:
        raise ValueError(f"cell: expected a 'family' key, got keys {sorted(data)}")
    return config_class(**data)


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
        # Made once (not a field): a CellConfig's construction and checks cost about 8 us,
        # and every forward of a deeper stack asks for it twice.
        object.__setattr__(self, "_deeper_cell", None if self.num_layers == 1 else self._deeper())

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def layer_cell(self, layer: int) -> CellConfig:
        """The cell of layer ``layer``: deeper layers read the previous layer's output."""
        return self.cell if layer == 0 else self._deeper_cell or self._deeper()

    def _deeper(self) -> CellConfig:
        return replace(self.cell, input_size=self.cell.output_size * self.num_directions)

    @property
    def is_torch_compatible(self) -> bool:
        """True when ``torch.nn`` computes exactly this stack."""
        from lstmkit.cells import family_of

        return (family_of(self.cell).torch_computes(self.cell) and self.recurrent_dropout == 0.0
                and self.zoneout == 0.0)

    def to_dict(self) -> dict:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        data = asdict(self)
        data["cell"] = self.cell.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LayerConfig:
        data = dict(data)
        return cls(cell=cell_from_dict(data.pop("cell")), **data)
