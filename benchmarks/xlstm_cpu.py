"""xLSTM on the CPU: lstmkit's mLSTM and sLSTM against NX-AI's native torch implementations, and
against lstmkit's LSTM of the same width, side by side in one run.

(Not named xlstm.py: a script's folder comes first on sys.path, and the file would hide NX-AI's
xlstm package.)

Three tables:

* **mLSTM kernel**: ``lstmkit.functional.mlstm`` (chunkwise) against mlstm_kernels 2.0.6's
  ``chunkwise--native_autograd``, ``chunkwise--native_custbw`` and ``parallel--native_autograd``
  on the same q, k, v, i, f (B, NH, T, D).
* **sLSTM scan**: ``lstmkit.functional.slstm`` against xlstm 2.0.6's vanilla sLSTM cell (the
  backend that runs on a CPU) on the same input terms (B, T, 4H).
* **Layers**: ``lstmkit.sLSTM`` and ``lstmkit.mLSTM`` against ``lstmkit.LSTM`` (torch.nn's
  kernel underneath) with the same input and hidden sizes.

Training is forward plus backward (gradients of every input and parameter); inference is the
forward under ``torch.no_grad()``. Times are medians of interleaved repeats; ratios are to the
first column of each table (below 1 is faster). Peak memory is the most MiB tensors held at once
during one training step (torch profiler).

    PYTHONPATH=src python benchmarks/xlstm_cpu.py           # full run, writes docs/benchmarks.md
    PYTHONPATH=src python benchmarks/xlstm_cpu.py --quick   # tiny sizes, prints only
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _report
import torch
from cpu_kernels import medians_ms, peak_mib

import lstmkit
from lstmkit.functional import mlstm, slstm

MLSTM_SIZES = [(2, 4, 512, 64), (8, 4, 256, 32), (1, 4, 2048, 64)]
"""(B, NH, T, D)"""
SLSTM_SIZES = [(16, 256, 128, 4), (1, 256, 256, 4)]
"""(B, T, H, NH)"""
LAYER_SIZES = [(256, 16, 64, 128)]
"""(T, B, I, H)"""


def _train(fn, inputs):
    def run():
        for t in inputs:
            t.grad = None
        fn().sum().backward()
    return run


def _infer(fn):
    def run():
        with torch.no_grad():
            fn()
    return run


def mlstm_peers(size):
    from mlstm_kernels.torch import get_mlstm_kernel
    B, NH, T, D = size
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(B, NH, T, D, generator=g) for _ in range(3)]
    args += [torch.randn(B, NH, T, generator=g), torch.randn(B, NH, T, generator=g) + 3.0]
    args = [t.requires_grad_() for t in args]
    kernels = {name: get_mlstm_kernel(name) for name in
               ("chunkwise--native_autograd", "chunkwise--native_custbw",
                "parallel--native_autograd")}
    chunk = min(64, T)
    peers = {f"lstmkit chunkwise L={chunk}": lambda: mlstm(*args, chunk_size=chunk)}
    for name, kernel in kernels.items():
        extra = {"chunk_size": chunk} if name.startswith("chunkwise") else {}
        label = name.replace("--", " ") + (f" L={chunk}" if extra else "")
        peers[f"NX-AI {label}"] = lambda kernel=kernel, extra=extra: kernel(*args, **extra)
    if T >= 64:  # the same function with smaller chunks: less L x L work per step
        peers["lstmkit chunkwise L=32"] = lambda: mlstm(*args, chunk_size=32)
        peers["NX-AI chunkwise native_autograd L=32"] = (
            lambda: kernels["chunkwise--native_autograd"](*args, chunk_size=32))
    return peers, args


def slstm_peers(size):
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig
    B, T, H, NH = size
    config = sLSTMCellConfig(hidden_size=H, num_heads=NH, backend="vanilla", dtype="float32",
                             enable_automatic_mixed_precision=False)
    cell = sLSTMCell(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cell._recurrent_kernel_.normal_(0.0, 0.1, generator=g)
    x = torch.randn(B, T, 4 * H, generator=g, requires_grad=True)
    r = cell.recurrent_kernel.clone().requires_grad_()
    peers = {"lstmkit slstm": lambda: slstm(x, r), "NX-AI vanilla": lambda: cell(x)[0]}
    return peers, [x, r, *cell.parameters()]


def layer_peers(size):
    T, B, inputs, H = size
    torch.manual_seed(0)
    modules = {"lstmkit.LSTM": lstmkit.LSTM(inputs, H), "lstmkit.sLSTM": lstmkit.sLSTM(inputs, H),
               "lstmkit.mLSTM": lstmkit.mLSTM(inputs, H)}
    x = torch.randn(T, B, inputs)
    peers = {name: (lambda m=m: m(x)[0]) for name, m in modules.items()}
    return peers, [p for m in modules.values() for p in m.parameters()]


def measure(peers, inputs, budget: float) -> dict[str, dict[str, float]]:
    train = medians_ms({n: _train(fn, inputs) for n, fn in peers.items()}, budget, 3, 30)
    infer = medians_ms({n: _infer(fn) for n, fn in peers.items()}, budget, 3, 30)
    memory = {n: peak_mib(_train(fn, inputs)) for n, fn in peers.items()}
    return {n: {"train": train[n], "infer": infer[n], "mib": memory[n]} for n in peers}


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    base = next(iter(rows.values()))
    lines = [f"### {title}", "",
             "| implementation | train ms | ratio | inference ms | ratio | peak MiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['train']:.1f} | {r['train'] / base['train']:.2f} | "
                     f"{r['infer']:.1f} | {r['infer'] / base['infer']:.2f} | {r['mib']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, print only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per timing round")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start, load = time.perf_counter(), os.getloadavg()[0]
    plans = [("mLSTM kernel", mlstm_peers, MLSTM_SIZES, [(1, 2, 64, 16)],
              "B={}, NH={}, T={}, D={}"),
             ("sLSTM scan", slstm_peers, SLSTM_SIZES, [(2, 16, 16, 4)], "B={}, T={}, H={}, NH={}"),
             ("Layers", layer_peers, LAYER_SIZES, [(16, 2, 8, 16)], "T={}, B={}, I={}, H={}")]
    sections = []
    for title, build, sizes, quick, label in plans:
        for size in quick if args.quick else sizes:
            rows = measure(*build(size), 0.2 if args.quick else args.budget)
            text = table(f"{title}, {label.format(*size)}", rows)
            print(text, flush=True)
            sections.append(text)
    if not args.quick:
        header = ("## xLSTM on the CPU (benchmarks/xlstm_cpu.py)\n\n"
                  f"{_report.machine(f'{torch.get_num_threads()} thread(s)')}; xlstm 2.0.6, "
                  f"mlstm_kernels 2.0.6; float32. Ratios to the first row (below 1 is faster). "
                  f"`PYTHONPATH=src python benchmarks/xlstm_cpu.py` "
                  f"({time.perf_counter() - start:.0f} s, on a machine shared with other "
                  f"jobs: load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at "
                  f"the end; ratios are steadier than times).\n")
        _report.write_section("xlstm", header + "\n" + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
