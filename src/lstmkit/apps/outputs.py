"""Result files of the applications, written atomically like the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from lstmkit.checkpoint import atomic_write


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON; values JSON lacks (timestamps) are written as text."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_csv(path: str | Path, table) -> None:
    """A pandas DataFrame as CSV, without its index."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
