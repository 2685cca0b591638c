"""Command-line options generated from config dataclasses, and ``--config`` files.

Each field of a frozen config dataclass becomes ``--field-name`` with the docstring under the
field as its help, so options are never restated by hand. A JSON config file supplies defaults;
unknown keys in it are rejected.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path


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


def _scalar_type(annotation):
    """(parser type, is optional) of a field annotation such as ``int``, ``float | None``."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing})  # noqa: S307 - our own annotations
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


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


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--name`` for every field of dataclass ``cls`` not in ``skip``; defaults are left
    unset (None) so that a ``--config`` file can fill them."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind, optional = _scalar_type(hints[field.name])
        parse = _parse_bool if kind is bool else kind
        if kind not in (bool, int, float, str):
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        # A bare boolean flag (``--resume``) means true; ``--resume false`` still parses.
        flag = {"nargs": "?", "const": True} if kind is bool else {}
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                           type=_optional(parse) if optional else parse,
                           metavar=kind.__name__.upper(),
                           help=f"{docs.get(field.name, '')} (default: {default})", **flag)


def build_config(cls, args: argparse.Namespace, config_file: str | Path | None = None, **fixed):
    """``cls`` from, in rising priority: its defaults, a JSON ``config_file``, the command line,
    then ``fixed``. Unknown keys in the file raise ValueError."""
    values: dict = {}
    if config_file is not None:
        values.update(load_config_file(cls, config_file))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    values.update(fixed)
    return cls(**values)


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
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"--config: unknown keys {unknown} in {path}; expected some of "
                         f"{sorted(names)}")
    return data
