"""Cells: single recurrent steps, one file per family, each with its plain-PyTorch reference.

:data:`FAMILIES` is the registry: a family is its module plus one :func:`register` line here
(or in the code that defines it, for a family outside lstmkit).
"""

from __future__ import annotations

import importlib

from lstmkit.cells.base import Family, RecurrentCell
from lstmkit.cells.gru import GRUCell, GRUConfig
from lstmkit.cells.lstm import LSTMCell, LSTMConfig, LSTMState
from lstmkit.cells.rnn import RNNCell, RNNConfig
from lstmkit.config import CellConfig

FAMILIES: dict[str, Family] = {}
"""Family key -> the family."""


def register(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES`; returns it."""
    if not isinstance(family, Family):
        raise TypeError(f"family: expected a lstmkit.cells.Family, got {type(family).__name__}")
    if family.config.family != family.key:
        raise ValueError(f"family: expected its config's family to be {family.key!r}, "
                         f"got {family.config.family!r}")
    FAMILIES[family.key] = family
    serializable(family.make_state)
    return family


def serializable(state_type) -> None:
    """Let torch.export save a program whose outputs hold this NamedTuple state (a family's,
    or a container of them such as the xLSTM blocks' BlockState)."""
    from torch.utils import _pytree

    if (isinstance(state_type, type) and issubclass(state_type, tuple)
            and state_type not in _pytree.SUPPORTED_SERIALIZED_TYPES):
        name = f"{state_type.__module__}.{state_type.__qualname__}"
        _pytree._register_namedtuple(state_type, serialized_type_name=name)


def family_of(key: str | CellConfig) -> Family:
    """The family of a key ("lstm") or of a config."""
    name = key.family if isinstance(key, CellConfig) else key
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"family: expected one of {tuple(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


_MODULES = ("lstm", "gru", "rnn", "slstm", "mlstm")
"""The families lstmkit ships: a new one is its module ``cells/<key>.py`` and a word here."""
for _name in _MODULES:
    register(importlib.import_module(f"lstmkit.cells.{_name}").FAMILY)

__all__ = ["FAMILIES", "Family", "GRUCell", "GRUConfig", "LSTMCell", "LSTMConfig", "LSTMState",
           "RNNCell", "RNNConfig", "RecurrentCell", "family_of", "register"]
