"""Application configs from plain dicts (JSON config files, checkpoint metadata), nested
dataclasses included, with every key and type checked.

>>> from lstmkit.apps.charlm import CharLMConfig
>>> from_dict(CharLMConfig, {"epochs": 2, "model": {"peephole": True}}).model.peephole
True
>>> from_dict(CharLMConfig, {"model": {"peephol": True}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: model: unknown keys ['peephol']; expected some of ['backend', 'bias', ...]
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing


@functools.cache
def field_types(cls) -> dict[str, object]:
    """Field name -> its resolved annotation."""
    return typing.get_type_hints(cls)


def unwrap(annotation) -> tuple[object, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0], True
    return annotation, False


def is_list(kind) -> bool:
    return typing.get_origin(kind) in (tuple, list)


def check_keys(cls, data: dict, where: str = "") -> None:
    """Raise ValueError if ``data`` (nested dicts included) has a key ``cls`` lacks."""
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip('.') or cls.__name__}: expected a JSON object, got "
                         f"{type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where.rstrip('.')}: " if where else ""
        raise ValueError(f"{prefix}unknown keys {unknown}; expected some of {sorted(names)}")
    for name, value in data.items():
        kind = unwrap(field_types(cls)[name])[0]
        if dataclasses.is_dataclass(kind) and not isinstance(value, kind) and value is not None:
            check_keys(kind, value, f"{where}{name}.")


def from_dict(cls, data: dict, where: str = ""):
    """``cls(**data)`` with nested dataclass fields built from nested dicts; unknown keys and
    values of the wrong type raise ValueError naming the key (``where`` prefixes it)."""
    check_keys(cls, data, where)
    defaults = {f.name: f.default_factory() for f in dataclasses.fields(cls)
                if f.default_factory is not dataclasses.MISSING}
    values = {}
    for name, value in data.items():
        if isinstance(value, dict) and dataclasses.is_dataclass(defaults.get(name)):
            # Keys not given keep the application's defaults, not the nested class's own.
            value = {**dataclasses.asdict(defaults[name]), **value}
        values[name] = _value(field_types(cls)[name], value, f"{where}{name}")
    return cls(**values)


def _value(annotation, value, name: str):
    kind, optional = unwrap(annotation)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: expected {_describe(kind)}, got None")
    if dataclasses.is_dataclass(kind):
        return value if isinstance(value, kind) else from_dict(kind, value, f"{name}.")
    if is_list(kind):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_value(item, v, f"{name}[{i}]") for i, v in enumerate(value))
    if not _fits(kind, value):
        raise ValueError(f"{name}: expected {_describe(kind)}, got {value!r}")
    return float(value) if kind is float else value


def _fits(kind, value) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _describe(kind) -> str:
    return {bool: "true or false", int: "an int", float: "a number", str: "a string"}.get(
        kind, getattr(kind, "__name__", str(kind)))
