"""The contract between layers and backends: what a backend declares, what it is given.

The contract runs one way, layers -> kernels -> cells: a backend imports the cells (the family
and its reference equations), never the layers. A backend offers either

* ``scan(family, cfg, weights, x, state, lengths, masks) -> (y, state)``: one layer in one
  direction, which the layer (:mod:`lstmkit.layers.stack`) wraps with stacking, direction,
  inter-layer dropout and the masks it draws; or
* ``stack(family, config, weights, x, state, lengths, training) -> (y, state)``: the whole stack
  at once, for a backend whose op stacks layers itself (torch's ``torch.lstm``: the native
  backend, whose numbers must be torch.nn's bit for bit, dropout draws included).

Shapes: x (T, B, I) time-major; a one-layer state's tensors (B, ...), a stack's (L*D, B, ...);
lengths None or an int64 CPU tensor (B,) of values in 1..T; y (T, B, P) per direction, zero past
each sequence's length. ``weights`` is name -> tensor for one cell (``weights[layer][direction]``
for a stack).

A :class:`Declaration` says what a backend computes; :meth:`Declaration.refuses` fails closed:
a family, option, dtype, device or layer feature not declared is refused with its reason, so
"auto" can never pick a backend for something it does not compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lstmkit.cells.base import ANY, Options, uncovered
from lstmkit.config import LayerConfig

FEATURES = ("lengths", "bidirectional", "dropout", "recurrent_dropout", "zoneout")
"""Layer features a backend may declare (``dropout``: between layers)."""
LAYER_FEATURES = frozenset({"bidirectional", "dropout"})
"""What the layer provides around a scan (reversal, inter-layer dropout): a scan backend need
not declare them, a whole-stack backend must."""


class StepMasks(NamedTuple):
    """What a scan multiplies in at each step; None where unused.

    ``hidden`` (B, P) scales h_{t-1} before the recurrent product (variational dropout, one mask
    for all steps). ``zoneout`` holds one (T, B, *shape) tensor per state tensor: the weight of
    the previous value, ``s_t = z * s_{t-1} + (1 - z) * s_new``; 0/1 draws in training, the
    probability itself in evaluation.
    """

    hidden: torch.Tensor | None = None
    zoneout: tuple[torch.Tensor, ...] | None = None


def _names(values) -> str:
    return ", ".join(str(v).replace("torch.", "") for v in values)


@dataclass(frozen=True)
class Declaration:
    """What a backend computes. :data:`~lstmkit.cells.base.ANY` declares everything."""

    families: Mapping[str, Options] | object
    """Family key -> the options covered (see :func:`lstmkit.cells.base.uncovered`)."""
    dtypes: tuple[torch.dtype, ...] | object = ANY
    devices: tuple[str, ...] | object = ANY
    """Device types (``"cpu"``, ``"cuda"``)."""
    features: frozenset[str] | object = ANY
    """A subset of :data:`FEATURES`."""
    limits: Callable[[LayerConfig], str | None] | None = None
    """config -> why a size is out of range, or None."""
    available: Callable[[torch.device], str | None] | None = None
    """device -> why this machine cannot run the backend there (no compiler, no Triton), or
    None."""

    def refuses(self, config: LayerConfig, device: torch.device, dtype: torch.dtype,
                provided: frozenset[str] = frozenset()) -> str | None:
        """Why the backend does not compute ``config`` on ``device`` in ``dtype``, or None;
        ``provided``: features the caller supplies itself (need not be declared)."""
        if self.available is not None and (reason := self.available(device)):
            return reason
        if self.devices is not ANY and device.type not in self.devices:
            return f"runs on {_names(self.devices)} devices only, got {device.type}"
        if self.dtypes is not ANY and dtype not in self.dtypes:
            return f"computes {_names(self.dtypes)} only, got {_names([dtype])}"
        cell = config.cell
        if self.families is not ANY:
            if cell.family not in self.families:
                return (f"does not compute the {cell.family!r} family (declares "
                        f"{_names(self.families)})")
            if reason := uncovered(cell, self.families[cell.family]):
                return reason
        for feature in FEATURES:
            if uses(config, feature) and feature not in provided and not self.declares(feature):
                return f"does not declare the layer feature {feature}"
        return self.limits(config) if self.limits else None

    def declares(self, feature: str) -> bool:
        return self.features is ANY or feature in self.features


def uses(config: LayerConfig, feature: str) -> bool:
    """Whether ``config`` uses a layer feature of :data:`FEATURES` (lengths: at call time)."""
    return {"lengths": False, "bidirectional": config.bidirectional,
            "dropout": config.dropout > 0 and config.num_layers > 1,
            "recurrent_dropout": config.recurrent_dropout > 0,
            "zoneout": config.zoneout > 0}[feature]


@dataclass(frozen=True)
class Backend:
    """A named way to run a layer stack: its declaration and its ``scan`` or ``stack``."""

    name: str
    declaration: Declaration
    scan: Callable | None = None
    """One layer, one direction (see the module docstring)."""
    stack: Callable | None = None
    """The whole stack, instead of ``scan``."""
    auto_devices: tuple[str, ...] | None = None
    """Device types on which "auto" may pick this backend; None: any. Named explicitly, a
    backend runs wherever its declaration allows (Triton's interpreter on the CPU, for tests)."""
    auto_defers: Callable | None = None
    """``(config, device, dtype, training) -> reason or None``: why "auto" should pass over
    this backend for a configuration it does run (a later one is as fast there and closer to
    torch.nn); None: never. Named explicitly, the backend still runs it."""

    def __post_init__(self):
        if (self.scan is None) == (self.stack is None):
            raise ValueError(f"backend {self.name!r}: expected exactly one of scan and stack")

    def supports(self, config: LayerConfig, device: torch.device, dtype: torch.dtype,
                 training: bool = True) -> str | None:
        """None when the backend computes the configuration, else the reason it does not."""
        provided = LAYER_FEATURES if self.scan is not None else frozenset()
        return self.declaration.refuses(config, device, dtype, provided)
