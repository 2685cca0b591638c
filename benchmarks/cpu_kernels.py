"""CPU kernels: lstmkit's backends against torch.nn and the reference loop, training and inference.

For each size (the issue's four CPU shapes) and each cell (the plain LSTM, GRU and RNN and every
variant), one run times side by side: torch.nn's layer of the same size (the baseline; for a
variant, torch.nn's plain layer of its family, with the projection where the variant has one),
every lstmkit backend that runs on the CPU, and the reference loop. Training is forward plus
backward of the output (the input needs no gradient, as data in training); inference is the
forward under ``torch.no_grad()`` in evaluation mode (no dropout masks; zoneout's
expectation). Ratios are to the baseline; below 1 is faster. Peak memory is
the most bytes that tensors allocated during one training step held at once, from the torch
profiler's memory events (what c10's CPU allocator hands out: saved activations, workspaces,
gradients), in a pass after the timings.

    PYTHONPATH=src python benchmarks/cpu_kernels.py            # full run, a few minutes
    PYTHONPATH=src python benchmarks/cpu_kernels.py --quick    # smoke run, prints only

The full run writes its section of docs/benchmarks.md, one per kind of CPU (vendor and widest
vector ISA: ``amd-avx2``, ``intel-avx512``) and thread count (``cpu-kernels-amd-avx2`` for one
thread, ``cpu-kernels-amd-avx2-2-threads`` for two), so that one machine's run leaves another's
tables in place, naming the CPU and the flags the kernels' speed depends on (AVX2, AVX-512,
their 16-bit and int8 forms).
Timings are medians of interleaved repeats; other processes on the machine inflate numbers
more than ratios, but a quiet machine is what the published table should come from.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _report
import torch

import lstmkit
from lstmkit import kernels

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(100, 1, 64, 128), (200, 16, 32, 64), (100, 32, 128, 256), (50, 64, 512, 512)]
"""(T, B, I, H): the issue's four CPU shapes."""


@dataclass(frozen=True)
class Cell:
    """A row of the tables: a family and the lstmkit options that make the variant."""

    label: str
    family: str  # "LSTM", "GRU" or "RNN"
    options: dict = field(default_factory=dict)
    layer: dict = field(default_factory=dict)  # options of the layer (dropout, zoneout)

    def baseline_options(self, hidden: int) -> dict:
        """torch.nn's arguments for the baseline of this row."""
        keep = {k: v for k, v in self.options.items() if k == "nonlinearity"}
        if "proj_size" in self.options:
            keep["proj_size"] = self.options["proj_size"](hidden)
        return keep

    def lstmkit_options(self, hidden: int) -> dict:
        options = {**self.options, **self.layer}
        if "proj_size" in options:
            options["proj_size"] = options["proj_size"](hidden)
        return options


CELLS = [
    Cell("LSTM", "LSTM"),
    Cell("LSTM peephole", "LSTM", dict(peephole=True)),
    Cell("LSTM coupled (CIFG)", "LSTM", dict(coupled=True)),
    Cell("LSTM cell clip", "LSTM", dict(cell_clip=3.0)),
    Cell("LSTM no forget gate", "LSTM", dict(forget_gate=False)),
    Cell("LSTM hard_sigmoid, softsign", "LSTM", dict(gate_activation="hard_sigmoid",
                                                    output_activation="softsign")),
    Cell("LSTM layer norm", "LSTM", dict(layer_norm=True)),
    Cell("LSTM projection (H/2)", "LSTM", dict(proj_size=lambda h: h // 2)),
    Cell("LSTM recurrent dropout, zoneout", "LSTM", layer=dict(recurrent_dropout=0.25,
                                                               zoneout=0.1)),
    Cell("GRU", "GRU"),
    Cell("GRU reset before", "GRU", dict(reset_after=False)),
    Cell("RNN tanh", "RNN"),
    Cell("RNN relu", "RNN", dict(nonlinearity="relu")),
]
QUICK_CELLS = ["LSTM", "LSTM layer norm", "GRU"]


def machine() -> str:
    return _report.machine(f"{torch.get_num_threads()} threads; CPU flags {_report.cpu_flags()}")


# --- measuring ---------------------------------------------------------------------------------

def peak_mib(fn) -> float:
    """The most MiB that tensors allocated while ``fn`` runs held at once."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    events = sorted((e for e in events if e.get("name") == "[memory]"
                     and e["args"].get("Device Type") == 0), key=lambda e: e["ts"])
    if not events:
        return 0.0
    first = events[0]["args"]  # the allocator's total counts tensors from before the step too
    before = first["Total Allocated"] - first["Bytes"]
    return max(e["args"]["Total Allocated"] - before for e in events) / 2**20


def _size(text: str) -> tuple[int, int, int, int]:
    """``--size`` "T,B,I,H" as a tuple."""
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected four positive integers T,B,I,H, got {text!r}")
    return tuple(int(p) for p in parts)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""How a call is timed: wall-clock, or the CPU time of this process (all its threads), which a
loaded machine's preemption does not inflate (its cache misses still do)."""


def medians_ms(fns: dict, budget: float, min_reps: int, max_reps: int,
               stat=statistics.median, clock=time.perf_counter) -> dict[str, float]:
    """Median (or ``stat``) milliseconds per call of each function, timed in interleaved rounds
    (one call of each per round) until the slowest has ``min_reps`` calls and the round budget
    is spent."""
    for fn in fns.values():  # warm up: first-use builds, caches, allocator
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
        reps = len(next(iter(times.values())))
        if reps >= max_reps or (reps >= min_reps and time.perf_counter() - start > budget):
            break
    return {name: stat(ts) * 1e3 for name, ts in times.items()}


def _train_step(module, x, grad_out):
    def step():
        for p in module.parameters():
            p.grad = None
        y, _ = module(x)
        y.backward(grad_out)
    return step


def _infer_step(module, x):
    def step():
        with torch.no_grad():
            module(x)
    return step


def backends() -> list[str]:
    """lstmkit's backends that run on this CPU (the reference last: it is the slow peer)."""
    names = []
    for name in kernels.names():
        backend = kernels.get(name)
        if backend.auto_devices is None or "cpu" in backend.auto_devices:
            names.append(name)
    return [n for n in names if n != "reference"] + ["reference"]


def peers_of(cell: Cell, size, baselines: dict) -> dict:
    """Name -> module for torch.nn's baseline and every lstmkit backend that runs the cell."""
    steps, batch, inputs, hidden = size
    options = cell.lstmkit_options(hidden)
    peers = {}
    for name in backends():
        try:
            peers[name] = getattr(lstmkit, cell.family)(inputs, hidden, backend=name, **options)
        except ValueError:  # the backend cannot run this cell (native: a variant)
            continue
    key = (cell.family, size, tuple(sorted(cell.baseline_options(hidden).items())))
    if key not in baselines:
        torch_layer = getattr(torch.nn, cell.family)(inputs, hidden,
                                                     **cell.baseline_options(hidden))
        baselines[key] = torch_layer
    return {"torch.nn": baselines[key], **peers}


def _data(size, peers: dict):
    steps, batch, inputs, _ = size
    torch.manual_seed(0)
    x = torch.randn(steps, batch, inputs)
    out_size = peers["torch.nn"](x[:1])[0].shape[-1]
    return x, torch.randn(steps, batch, out_size)


def measure(cell: Cell, size, budget: float, baselines: dict, stat=statistics.median,
            clock=time.perf_counter, min_reps: int | None = None) -> dict:
    """Median times (ms) of every peer for one cell at one size, training and inference."""
    peers = peers_of(cell, size, baselines)
    x, grad_out = _data(size, peers)
    steps, batch, _, hidden = size
    slow_reps = min_reps or (2 if steps * batch * hidden >= 1_000_000 else 3)
    train = medians_ms({n: _train_step(m.train(), x, grad_out) for n, m in peers.items()},
                       budget, slow_reps, 50, stat, clock)
    infer = medians_ms({n: _infer_step(m.eval(), x) for n, m in peers.items()}, budget,
                       slow_reps, 50, stat, clock)
    return {"train": train, "infer": infer}


def measure_memory(cell: Cell, size, baselines: dict) -> dict:
    """Peak MiB of one training step of every peer."""
    peers = peers_of(cell, size, baselines)
    x, grad_out = _data(size, peers)
    memory = {}
    for name, module in peers.items():
        step = _train_step(module.train(), x, grad_out)
        step()  # first-use work (the build, caches) is not the step's memory
        memory[name] = peak_mib(step)
    return memory


# --- report ------------------------------------------------------------------------------------

def progress(label: str, size, result: dict) -> str:
    """One line per measured cell while the run goes."""
    train, infer = result["train"], result["infer"]
    ratios = "  ".join(f"{p} {train[p] / train['torch.nn']:.2f}/{infer[p] / infer['torch.nn']:.2f}"
                       for p in train if p != "torch.nn")
    return (f"{size} {label}: torch.nn {train['torch.nn']:.2f}/{infer['torch.nn']:.2f} ms; "
            f"train/infer ratios {ratios}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}"


def size_table(size, rows: dict[str, dict], peers: list[str]) -> str:
    steps, batch, inputs, hidden = size
    lines = [f"### T={steps}, B={batch}, I={inputs}, H={hidden}", ""]
    head = ["cell", "torch.nn train ms", *(f"{p} train" for p in peers),
            "torch.nn infer ms", *(f"{p} infer" for p in peers),
            "peak MiB (train): torch.nn / " + " / ".join(peers)]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, result in rows.items():
        cells = [label]
        for mode in ("train", "infer"):
            base = result[mode]["torch.nn"]
            cells.append(f"{base:.2f}")
            cells += [_ratio(result[mode][p], base) if p in result[mode] else "-" for p in peers]
        memory = result["memory"]
        cells.append(" / ".join("-" if memory.get(p) is None else f"{memory[p]:.1f}"
                                for p in ["torch.nn", *peers]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """The issue's targets, each met or missed, for the cpu backend."""
    lines = []
    for mode, plain_goal, variant_goal in (("train", 1.0, 1.2), ("infer", 1.0, 1.2)):
        worst_plain, worst_variant = [], []
        for (label, size), result in results.items():
            if "cpu" not in result[mode]:
                continue
            ratio = result[mode]["cpu"] / result[mode]["torch.nn"]
            plain = label in ("LSTM", "GRU", "RNN tanh")
            (worst_plain if plain else worst_variant).append((ratio, label, size))
        for name, goal, rows in (("plain", plain_goal, worst_plain),
                                 ("variants", variant_goal, worst_variant)):
            if not rows:
                continue
            ratio, label, size = max(rows)
            missed = sorted((r, lab, s) for r, lab, s in rows if r > goal)
            verdict = "met" if not missed else f"missed in {len(missed)} of {len(rows)}"
            lines.append(f"- {mode}, {name}: target <= {goal:.1f}x torch.nn; worst "
                         f"{ratio:.2f}x ({label}, T,B,I,H={size}): {verdict}.")
    return lines


def report(results: dict, seconds: float, stat: str = "median") -> str:
    peers = sorted({p for r in results.values() for p in r["train"] if p != "torch.nn"},
                   key=backends().index)
    by_size: dict = {}
    for (label, size), result in results.items():
        by_size.setdefault(size, {})[label] = result
    threads = torch.get_num_threads()
    parts = [f"## CPU kernels, {_report.cpu_class()[1]}, {threads} thread{'s' * (threads > 1)} "
             f"(benchmarks/cpu_kernels.py "
             f"--threads {threads}{' --clock cpu' if 'CPU-time' in stat else ''})", "",
             f"Machine: {machine()}. Run time {seconds:.0f} s; "
             f"{_report.load_note('end', threads)}; each cell's peers interleaved.", "",
             f"Each cell: {stat} milliseconds of torch.nn's layer (for a variant, torch.nn's "
             "plain layer of the family, with the projection where the variant has one), then "
             "each lstmkit backend's time as a ratio to it (below 1 is faster; - where the "
             "backend does not run the cell). Training is forward + backward in training mode, "
             "inference the forward under no_grad in evaluation mode. Peak MiB: the most "
             "memory the tensors allocated in one training step held at once (torch "
             "profiler).",
             "", "Targets (cpu backend):", "", *targets(results), ""]
    for size, rows in by_size.items():
        parts += [size_table(size, rows, peers), ""]
    return "\n".join(parts).rstrip() + "\n"


def write_section(text: str, threads: int) -> None:
    """One section per kind of CPU and thread count: ``cpu-kernels-amd-avx2`` (one thread),
    ``cpu-kernels-amd-avx2-2-threads``; an AVX-512 machine's beside them."""
    name = _report.keyed("cpu-kernels")
    _report.write_section(name if threads == 1 else f"{name}-{threads}-threads", text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"the two small sizes and {', '.join(QUICK_CELLS)} only; prints only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, usually the core count)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing per cell and mode (default 0.4, quick 0.1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--best", action="store_true",
                        help="each peer's fastest call instead of its median: on a machine "
                             "that other jobs load, the call least preempted")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall-clock time, or this process's CPU time (robust to other "
                             "jobs preempting it; with two threads it counts OpenMP's "
                             "spin-waits too)")
    parser.add_argument("--size", action="append", type=_size, default=None,
                        metavar="T,B,I,H", help="only this size (repeatable); prints only")
    parser.add_argument("--cell", action="append", choices=[c.label for c in CELLS],
                        default=None, metavar="LABEL",
                        help="only this row, by its label (repeatable); prints only")
    parser.add_argument("--min-reps", type=int, default=None,
                        help="calls of each peer at least (default 2 at the largest size, 3 "
                             "below)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cells = [c for c in CELLS if (not args.quick or c.label in QUICK_CELLS)
             and (args.cell is None or c.label in args.cell)]
    sizes = args.size or (SIZES[:2] if args.quick else SIZES)
    budget = args.budget or (0.1 if args.quick else 0.4)
    print(f"Machine: {machine()}", flush=True)
    start, results, baselines = time.perf_counter(), {}, {}
    for size in sizes:
        for cell in cells:
            results[cell.label, size] = measure(cell, size, budget, baselines,
                                                min if args.best else statistics.median,
                                                CLOCKS[args.clock], args.min_reps)
            print(progress(cell.label, size, results[cell.label, size]), flush=True)
    for size in sizes:
        for cell in cells:
            results[cell.label, size]["memory"] = measure_memory(cell, size, baselines)
    stat = ("fastest" if args.best else "median") + ("" if args.clock == "wall" else " CPU-time")
    text = report(results, time.perf_counter() - start, stat)
    print()
    print(text)
    if not (args.quick or args.no_write or args.size or args.cell):  # a part: never the table
        write_section(text, torch.get_num_threads())
        print(f"wrote {ROOT / 'docs' / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
