"""Command-line options generated from config dataclasses, and ``--config`` files.

Each field of a frozen config dataclass becomes ``--field-name`` with the docstring under the
field as its help, so options are never restated by hand. A field that is itself a dataclass
(an application's ``model``) gives ``--model.field-name`` (``--model.field_name`` works too) for
each of its fields; a tuple field takes a list (``--weights 1 2 3``). A JSON config file supplies
defaults, nested objects for nested fields; unknown keys in it are rejected.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
from pathlib import Path

from lstmkit.apps.configs import check_keys, field_types, from_dict, is_list, unwrap


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                prefix: str = "", defaults=None) -> None:
    """Add ``--name`` for every field of dataclass ``cls`` not in ``skip``, ``--prefix.name``
    under ``prefix``; defaults are left unset (None) so that a ``--config`` file can fill them.
    ``defaults`` (an instance) gives the defaults shown in the help."""
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{prefix.rstrip('.') or cls.__name__} options")
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind, optional = unwrap(field_types(cls)[field.name])
        default = _default(field) if defaults is None else getattr(defaults, field.name)
        if dataclasses.is_dataclass(kind):
            add_options(parser, kind, prefix=f"{prefix}{field.name}.", defaults=default)
            continue
        many = is_list(kind)
        item = kind.__args__[0] if many else kind
        if item not in (bool, int, float, str):
            continue
        parse = _parse_bool if item is bool else item
        # A bare boolean flag (``--resume``) means true; ``--resume false`` still parses.
        flag = {"nargs": "?", "const": True} if item is bool else {}
        flag = {"nargs": "+"} if many else flag
        names = [f"--{prefix}{field.name.replace('_', '-')}"]
        if prefix and "_" in field.name:
            names.append(f"--{prefix}{field.name}")
        group.add_argument(*names, dest=f"{prefix}{field.name}", default=None,
                           type=_optional(parse) if optional else parse,
                           metavar=item.__name__.upper(),
                           # argparse %-formats help: a literal % (a date format) is doubled
                           help=f"{docs.get(field.name, '')} (default: {default})"
                           .replace("%", "%%"), **flag)


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def build_config(cls, args: argparse.Namespace, config_file: str | Path | None = None, **fixed):
    """``cls`` from, in rising priority: its defaults, a JSON ``config_file``, the command line,
    then ``fixed``. Unknown keys in the file raise ValueError."""
    values: dict = {}
    if config_file is not None:
        values.update(load_config_file(cls, config_file))
    for dest, value in vars(args).items():
        if value is not None:
            _set(cls, values, dest.split("."), value)
    values.update(fixed)
    return from_dict(cls, values)


def _set(cls, values: dict, path: list[str], value) -> None:
    """``values[path[0]][path[1]]... = value`` where the path names fields of ``cls``."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    if path[0] not in names:
        return
    if len(path) == 1:
        values[path[0]] = list(value) if isinstance(value, list) else value
        return
    inner = values.setdefault(path[0], {})
    if dataclasses.is_dataclass(inner):  # an instance from ``fixed``: edit a copy as a dict
        inner = values[path[0]] = dataclasses.asdict(inner)
    _set(unwrap(field_types(cls)[path[0]])[0], inner, path[1:], value)


def load_config_file(cls, path: str | Path) -> dict:
    """The keys of a JSON config file, checked against ``cls``'s fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--config: no such file: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--config: expected a JSON object in {path}, got invalid JSON "
                         f"({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config: expected a JSON object in {path}, got {type(data).__name__}")
    try:
        check_keys(cls, data)
    except ValueError as error:
        raise ValueError(f"--config: {error} in {path}") from None
    return data
