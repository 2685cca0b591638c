"""Compile time: lstmkit layers against torch.nn.LSTM under torch.compile, side by side.

For each layer and compiler backend: whether ``torch.compile(layer, fullgraph=True,
dynamic=True)`` compiles at all, the time of the first compiled forward and backward (the
compile) minus an eager one, the graphs dynamo made after a second (T, B), and, once
compiled, a training step's time over an eager one's at that size and at a larger one
(best of several each, taking turns). torch.nn.LSTM
fails fullgraph, so it is also timed without it (its graph breaks counted). Then writes its
section of docs/benchmarks.md (between the ``compile`` markers) with the machine named.

    PYTHONPATH=src python benchmarks/compile.py           # aot_eager and inductor (minutes)
    PYTHONPATH=src python benchmarks/compile.py --quick   # aot_eager only, no docs written

One thread; inductor's on-disk caches go to a fresh temporary folder, so every compile is cold.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lstmkit-inductor-")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from _report import machine, write_section  # noqa: E402
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit.layers.xlstm_blocks import xLSTM, xLSTMConfig  # noqa: E402

T, B, I, H = 50, 8, 32, 64  # noqa: E741 (the shape legend)
SECOND = (70, 12)
"""A second (T, B): a dynamic graph serves it without recompiling."""


LARGE = (100, 32, 128, 256)
"""(T, B, I, H) of the second steady-state ratio, where the kernels' work outweighs the calls."""


class TimeFirst(torch.nn.Module):
    """An xLSTM block stack (NX-AI's blocks, batch-first) read as the layers are:
    (T, B, I) in, (T, B, E) out."""

    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.stack = xLSTM(xLSTMConfig.from_pattern(hidden, "mLSTM:sLSTM 1:1", 2,
                                                    input_size=inputs))
        self.input_size = inputs

    def forward(self, x):
        y, state = self.stack(x.transpose(0, 1))
        return y.transpose(0, 1), state


def layers(inputs: int = I, hidden: int = H) -> dict[str, torch.nn.Module]:
    return {
        "torch.nn.LSTM": torch.nn.LSTM(inputs, hidden),
        "lstmkit LSTM (auto: native)": lstmkit.LSTM(inputs, hidden),
        "lstmkit LSTM (backend=cpu)": lstmkit.LSTM(inputs, hidden, backend="cpu"),
        "lstmkit LSTM peephole (auto: cpu)": lstmkit.LSTM(inputs, hidden, peephole=True),
        # what "auto" takes where no fused backend computes a configuration
        "lstmkit LSTM (backend=reference)": lstmkit.LSTM(inputs, hidden, backend="reference"),
        "lstmkit GRU (auto: native)": lstmkit.GRU(inputs, hidden),
        "lstmkit sLSTM": lstmkit.sLSTM(inputs, hidden, num_heads=4),
        # T=50, then 70: one chunk of 64, then two (the chunk count once put a guard on T)
        "lstmkit mLSTM": lstmkit.mLSTM(inputs, hidden, num_heads=4),
        "lstmkit xLSTM blocks (mLSTM, sLSTM)": TimeFirst(inputs, hidden),
    }


def _step(module, steps: int, batch: int) -> None:
    x = torch.randn(steps, batch, module.input_size, requires_grad=True)
    y, _ = module(x)
    y.sum().backward()


def steady(layer, compiled, steps: int, batch: int) -> float:
    """A compiled training step's best time over an eager one's, the two taking turns."""
    best = {"eager": float("inf"), "compiled": float("inf")}
    for _ in range(STEADY):
        for kind, module in (("eager", layer), ("compiled", compiled)):
            start = time.perf_counter()
            _step(module, steps, batch)
            best[kind] = min(best[kind], time.perf_counter() - start)
    return best["compiled"] / best["eager"]


def measure(name: str, layer, large, backend: str, fullgraph: bool) -> dict:
    torch._dynamo.reset()
    _step(layer, T, B)  # builds the cpu kernels, warms eager
    start = time.perf_counter()
    _step(layer, T, B)
    eager = time.perf_counter() - start
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(layer, backend=counter, fullgraph=fullgraph, dynamic=True)
    start = time.perf_counter()
    try:
        _step(compiled, T, B)
    except Exception as error:  # noqa: BLE001 (the failure is the result)
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"}
    seconds = time.perf_counter() - start - eager
    first = counter.frame_count
    _step(compiled, *SECOND)
    recompiles = counter.frame_count - first
    small = steady(layer, compiled, T, B)
    big = torch.compile(large, backend=backend, fullgraph=fullgraph, dynamic=True)
    return {"seconds": seconds, "graphs": first, "recompiles": recompiles, "steady": small,
            "large": steady(large, big, *LARGE[:2])}


STEADY = 20
"""Training steps timed per peer (eager and compiled taking turns) for the steady-state ratio."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="aot_eager only; no docs written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    backends = ["aot_eager"] if args.quick else ["aot_eager", "inductor"]
    for backend in backends:  # one-time imports and warm-up, so that no row pays them
        torch.compile(lambda x: x.sin() + 1, backend=backend, dynamic=True)(torch.randn(3, 5))
    rows = []
    large = layers(*LARGE[2:])
    for name, layer in layers().items():
        for backend in backends:
            for fullgraph in (True, False) if name.startswith("torch.nn") else (True,):
                result = measure(name, layer, large[name], backend, fullgraph)
                rows.append((name, backend, fullgraph, result))
                print(name, backend, f"fullgraph={fullgraph}", result, flush=True)
    table = ["| layer | compiler | fullgraph | compile (s) | graphs | recompiles at a new (T, B) "
             f"| compiled / eager training step | the same at (T, B, I, H) = {LARGE} |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, backend, fullgraph, r in rows:
        if "error" in r:
            table.append(f"| {name} | {backend} | {fullgraph} | fails: {r['error']} | | | | |")
        else:
            table.append(f"| {name} | {backend} | {fullgraph} | {r['seconds']:.2f} | "
                         f"{r['graphs']} | {r['recompiles']} | {r['steady']:.2f}x | "
                         f"{r['large']:.2f}x |")
    text = "\n".join([
        "## torch.compile (benchmarks/compile.py)", "",
        f"Machine: {machine()}. One thread; cold inductor caches. T={T}, B={B}, I={I}, H={H}; "
        f"compile = first compiled forward+backward minus an eager one; dynamic=True, then a "
        f"second call at (T, B) = {SECOND}.", "", *table, "",
        "Seconds are single cold compiles: on a shared machine they move between runs (one row "
        "by several times), so read which rows compile, in how many graphs and whether a new "
        "shape recompiles, before reading ratios. "
        "graphs: frames dynamo compiled on the first call. (Until the layers read their "
        "configs' floats as constants (`_transforms.static`), dynamo took each for a symbol, "
        "specialised it at its first test and restarted its analysis: every frame traced twice "
        "and counted two.) torch.nn.LSTM cannot be compiled with fullgraph (dynamo refuses "
        "torch.nn's RNN modules); without it dynamo compiles nothing (0 graphs) and it runs "
        "eagerly. lstmkit's layers are one "
        "graph around one custom operator per layer (kernels/native.py, kernels/cpu; the "
        "sLSTM's scan and the mLSTM's torch forms in functional/, the reference's loop over time "
        "in kernels/reference.py), so the "
        "compile does not grow with T and a new T or B reuses the graph (the mLSTM's second "
        "(T, B) spans two chunks of 64 where the first fits one). The xLSTM blocks row is "
        "NX-AI's block stack (layers/xlstm_blocks.py: an mLSTM block, then an sLSTM block, "
        "with their projections, convolutions and norms) in one graph; compiled, its causal "
        "convolutions are shifted sums, since inductor's lowering of a Conv1d's backward "
        "pins T. The mLSTM's and the reference's operators recompute their forward in their "
        "backward, as native's does. The last two "
        "columns are what a compiled layer costs once compiled. At the small size the calls "
        "dominate: each custom operator is dispatched through torch.library's Python layer, "
        "forward and backward. At the larger size that fades, and what stays is native's: its "
        "compiled backward reruns the forward inside its operator (a custom operator keeps no "
        "autograd graph of torch's own kernels), where the cpu backend's saves what its "
        "backward reads. For compiled training of a plain LSTM on a CPU, backend='cpu' is "
        "the faster choice.",
    ])
    print(text)
    if not args.quick:
        write_section("compile", text)


if __name__ == "__main__":
    main()
