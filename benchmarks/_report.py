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


KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
"""The /proc/cpuinfo flags the CPU kernels' speed depends on (vector width, FMA, 16-bit and
int8 dot products)."""


def cpu_flags() -> str:
    """Which of :data:`KERNEL_FLAGS` this CPU has, as "avx2 fma f16c (no avx512f, ...)"."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "flags unknown"
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    present = [f for f in KERNEL_FLAGS if f in have]
    absent = [f for f in KERNEL_FLAGS if f not in have]
    return " ".join(present) + (f" (no {', '.join(absent)})" if absent else "")


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
