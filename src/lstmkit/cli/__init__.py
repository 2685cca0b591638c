"""The ``lstmkit`` command: a thin shell over the library, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``; it builds a config
and calls a library function. User errors (bad values, missing files) print one line and exit 2;
``LSTMKIT_DEBUG=1`` shows the traceback instead. Any other exception is a bug in lstmkit and shows
its traceback. Ctrl-C (from the first line on, imports included) and SIGTERM stop with one line
and exit 130 and 143.

This module imports only the standard library at the top, so that ``main`` handles the signals
before torch loads (``lstmkit/__init__.py`` imports nothing either).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

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

USER_ERRORS = (ValueError, OSError)
"""Exceptions that mean bad input (bad values, missing or unreadable files), not a bug in
lstmkit: reported in one line. A TypeError or KeyError is a bug and shows its traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that training says where its checkpoint is
    (as for Ctrl-C) and every ``finally`` runs."""


def _terminate(signum, frame):
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstmkit", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Signal handlers can only be set from the main thread (an embedding program may call us
    # from another one, and keeps its own handling there).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    command = "lstmkit"
    try:
        args = build_parser().parse_args(argv)  # imports torch and the apps: Ctrl-C is caught
        command = f"lstmkit {args.command}"
        return int(args.run(args) or 0)
    except Terminated:
        print(f"{command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if os.environ.get("LSTMKIT_DEBUG"):
            raise
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
