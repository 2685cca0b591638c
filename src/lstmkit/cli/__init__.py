"""The ``lstmkit`` command: a thin shell over the library, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``; it builds a config
and calls a library function. User errors (bad values, missing files) print one line and exit 2;
``LSTMKIT_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

_COMMANDS = {
    "env": "lstmkit.cli.env",
    "demo": "lstmkit.cli.demo",
    "memory": "lstmkit.cli.memory",
    "serve": "lstmkit.cli.serve",
    "export": "lstmkit.cli.export",
    "forecast": "lstmkit.cli.forecast",
    "classify": "lstmkit.cli.classify",
    "charlm": "lstmkit.cli.charlm",
    "sample": "lstmkit.cli.sample",
    "predict": "lstmkit.cli.predict",
    "evaluate": "lstmkit.cli.evaluate",
    "transcribe": "lstmkit.cli.transcribe",
}
"""Subcommand -> module."""

USER_ERRORS = (ValueError, TypeError, OSError, KeyError)
"""Exceptions that mean bad input, not a bug in lstmkit: reported in one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstmkit", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("lstmkit: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if os.environ.get("LSTMKIT_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"lstmkit {args.command}: error: {message}", file=sys.stderr)
        return 2
