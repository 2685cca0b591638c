"""What the benchmark scripts share: naming the machine, timing peers side by side, and
writing their section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_us(peers: dict, rounds: int, *, loop_seconds: float, warmup: int, least: int,
            most: int | None = None, clock=time.perf_counter) -> dict[str, float]:
    """Microseconds per call of each peer (name -> callable): the best mean over ``rounds``
    loops of about ``loop_seconds`` each (at least ``least`` calls, at most ``most``), sized
    from ``warmup`` untimed calls. The peers take turns loop by loop, so a burst of load from
    other processes hits them alike; ``clock`` may be a CPU-time clock, which preemption does
    not advance."""
    calls = {}
    for name, fn in peers.items():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
        count = max(least, int(loop_seconds * warmup / (time.perf_counter() - start)))
        calls[name] = count if most is None else min(most, count)
    best = dict.fromkeys(peers, float("inf"))
    for _ in range(rounds):
        for name, fn in peers.items():
            start = clock()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (clock() - start) / calls[name])
    return {name: seconds * 1e6 for name, seconds in best.items()}


def load_note(when: str, own: float = 1.0) -> str:
    """The load average now and what it says of the run: ``own`` is the load the run itself
    makes (its busy threads); half a core above it counts as other processes sharing the
    machine."""
    load = os.getloadavg()[0]
    if load <= own + 0.5:
        return (f"load average {load:.1f} at the {when}, about the run's own: the machine was "
                "otherwise idle")
    return (f"load average {load:.1f} at the {when} on {os.cpu_count()} cores: other processes "
            "shared them, so absolute times are inflated, ratios less so")


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` of /proc/cpuinfo ("model name", "flags"): "" where it has none, None
    where there is no such file to read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith(field) and ":" in line), "")


def machine(*extra: str) -> str:
    """The processor's name, the core count and Python's and torch's versions, then ``extra``."""
    import torch

    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    parts = [f"{name}, {os.cpu_count()} cores; Python {platform.python_version()}",
             f"torch {torch.__version__}", *extra]
    return ", ".join(parts)


KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
"""The /proc/cpuinfo flags the CPU kernels' speed depends on (vector width, FMA, 16-bit and
int8 dot products)."""


def cpu_flags() -> str:
    """Which of :data:`KERNEL_FLAGS` this CPU has, as "avx2 fma f16c (no avx512f, ...)"."""
    line = _cpuinfo("flags")
    if line is None:
        return "flags unknown"
    have = set(line.split())
    present = [f for f in KERNEL_FLAGS if f in have]
    absent = [f for f in KERNEL_FLAGS if f not in have]
    return " ".join(present) + (f" (no {', '.join(absent)})" if absent else "")


def cpu_class() -> tuple[str, str]:
    """The kind of CPU a table came from: its vendor and widest vector instruction set, as a
    section key and a label, ("amd-avx2", "AMD, AVX2") or ("intel-avx512", "Intel, AVX-512").
    The kernels' products take different paths on each, so each kind keeps its own tables."""
    vendor, flags = _cpuinfo("vendor_id"), _cpuinfo("flags")
    if vendor is None:
        return "cpu", "CPU"
    flags = set(flags.split())
    make = {"GenuineIntel": ("intel", "Intel"), "AuthenticAMD": ("amd", "AMD")}.get(
        vendor, ("cpu", vendor or "CPU"))
    isa = (("avx512", "AVX-512") if "avx512f" in flags else ("avx2", "AVX2") if "avx2" in flags
           else ("sse", "SSE"))
    return f"{make[0]}-{isa[0]}", f"{make[1]}, {isa[1]}"


def keyed(name: str) -> str:
    """The section name for a table each kind of CPU keeps its own of ("step" ->
    "step-amd-avx2"): where the kernels take ISA-dependent paths, a run on one kind of CPU
    must not replace another's table."""
    return f"{name}-{cpu_class()[0]}"


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
