"""What the benchmark scripts share: naming the machine, and writing their section of
docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine(*extra: str) -> str:
    """The processor's name, the core count and Python's and torch's versions, then ``extra``."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{name}, {os.cpu_count()} cores; Python {platform.python_version()}",
             f"torch {torch.__version__}", *extra]
    return ", ".join(parts)


def write_section(name: str, text: str) -> None:
    """Replace the ``<!-- name:begin -->`` ... ``<!-- name:end -->`` section of
    docs/benchmarks.md with ``text`` (appending it if absent), atomically."""
    path = ROOT / "docs" / "benchmarks.md"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
