"""Files written whole or not at all: a crash or a kill mid-write leaves the previous file.

Every result lstmkit writes (checkpoints, exports, tables, plots, stream snapshots, corpus
caches) goes through :func:`atomic_write`; only the example data sets of
:mod:`lstmkit.tasks.examples`, which a rerun makes again, are written directly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, flush the file to disk, then move it onto ``path`` in one step.

    The temporary file sits beside ``path`` (a rename within one file system is atomic) and is
    removed if ``write`` fails. The data are fsynced before the rename and the folder after it,
    so after a power loss ``path`` holds either the old file or the whole new one, never an
    empty one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """``path``'s new content, atomically (UTF-8)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
