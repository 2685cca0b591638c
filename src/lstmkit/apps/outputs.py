"""Result files of the applications, written atomically like the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from lstmkit.io import atomic_write, write_text


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON; values JSON lacks (timestamps) are written as text."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_text(path, text)


def write_csv(path: str | Path, table) -> None:
    """A pandas DataFrame as CSV, without its index."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def write_table(path: str | Path, table) -> None:
    """A DataFrame as JSON records if ``path`` ends in .json, else as CSV."""
    if Path(path).suffix.lower() == ".json":
        atomic_write(path, lambda tmp: table.to_json(tmp, orient="records", indent=2))
    else:
        write_csv(path, table)

