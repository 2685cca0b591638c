"""The Triton backend on a CUDA GPU: checked against the reference, then timed against cuDNN
(LSTM, GRU) and NX-AI's kernels (xLSTM).

Run from the repository root on a machine with a CUDA GPU, Triton and lstmkit installed::

    python benchmarks/triton_gpu.py                  # check, then time; about 5-10 minutes
    python benchmarks/triton_gpu.py --tests          # first the Triton test suite on this GPU
    python benchmarks/triton_gpu.py --quick          # plain LSTM and GRU only
    python benchmarks/triton_gpu.py --tests --families xlstm   # the sLSTM and mLSTM only

1. (``--tests``) ``pytest tests/kernels/triton``: every option and launch plan against the
   reference at small sizes; on a GPU the tests run the compiled kernels, bfloat16 included.
2. Every timed variant against the reference at the timed shapes (the split-hidden, grid-barrier
   kernels only run at these sizes), forward values and all gradients, in float32 and
   bfloat16, over ``--check-steps`` steps. Any failure stops the script before timing.
3. Forward (no grad) and forward+backward times, median of ``--reps`` CUDA-event timings after
   warm-up, of: cuDNN's ``torch.nn.LSTM`` / ``nn.GRU`` in float32, bfloat16 and float16; the
   reference loop (float32); and the Triton backend for each variant, at (B=16, T=1024, H=768),
   at small batch (B=1, B=4) and at H=256 (where layer norm, the projection and the GRU's
   reset-before form run). Ratios are to cuDNN's plain layer of the same family in the same
   dtype; targets: within 2x at B=16, faster at small batch.

4. (``--families xlstm``, on by default) lstmkit's chunkwise mLSTM and sLSTM kernels against
   its torch forms (forward and gradients, float32 and bfloat16) and mlstm_kernels' Triton
   kernels, then timed beside mlstm_kernels' Triton kernels, FlashRNN's fused sLSTM and
   lstmkit's torch forms at realistic sizes (see benchmarks/_triton_xlstm.py; the peers are
   optional: ``pip install mlstm_kernels flashrnn``).

The table (with the GPU's name, versions and command) is printed and written to ``--out``.
``--dry-run`` runs the whole script at toy sizes on the CPU under Triton's interpreter, to check
the script itself where there is no GPU (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--dry-run" in sys.argv:  # before anything imports Triton, which reads it then
    os.environ["TRITON_INTERPRET"] = "1"

import _triton_xlstm as xlstm  # noqa: E402
import torch  # noqa: E402

from lstmkit import GRU, LSTM  # noqa: E402

INPUT = 768  # features of x, I
SIZES = [  # label, batch, steps, hidden
    ("B=16 T=1024 H=768", 16, 1024, 768),
    ("B=4 T=1024 H=768", 4, 1024, 768),
    ("B=1 T=1024 H=768", 1, 1024, 768),
    ("B=16 T=1024 H=256", 16, 1024, 256),  # where the one-program variants run
]
VARIANTS = {  # name -> (family, options); the single-program ones (layer norm, projection) last
    "lstm": (LSTM, {}),
    "lstm peephole": (LSTM, dict(peephole=True)),
    "lstm coupled": (LSTM, dict(coupled=True)),
    "lstm cell_clip": (LSTM, dict(cell_clip=3.0)),
    "lstm hard_sigmoid/softsign": (LSTM, dict(gate_activation="hard_sigmoid",
                                              cell_activation="softsign")),
    "lstm recurrent_dropout+zoneout": (LSTM, dict(recurrent_dropout=0.25, zoneout=0.1)),
    "gru": (GRU, {}),
    "gru reset_after=False": (GRU, dict(reset_after=False)),
    "lstm layer_norm": (LSTM, dict(layer_norm=True)),
    "lstm proj_size=H/2": (LSTM, dict(proj_size=lambda hidden: hidden // 2)),
}
"""Layer norm, the projection and the GRU's reset-before form run in one program per batch tile,
up to H=256: at H=768 the script says so and leaves them out; they are timed at H=256."""
QUICK = ("lstm", "gru")
DRY_SIZES = [("B=3 T=4 H=8", 3, 4, 8), ("B=1 T=4 H=8", 1, 4, 8)]
DEVICE = torch.device("cuda")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
"""Largest relative error ||a - e|| / ||e|| against the float32 reference."""


def _layer(family, options, backend, hidden, dtype):
    torch.manual_seed(0)
    options = {k: v(hidden) if callable(v) else v for k, v in options.items()}
    return family(INPUT, hidden, backend=backend, **options).to(DEVICE, dtype)


def _outputs(layer, x, grad_seed=1):
    """Output, final state and gradients of x and of every parameter."""
    x = x.detach().requires_grad_()
    torch.manual_seed(grad_seed)  # the same dropout and zoneout masks for every backend
    y, state = layer(x)
    state = tuple(state) if isinstance(state, tuple) else (state,)
    weight = torch.randn_like(y)
    loss = (y * weight).sum() + sum(s.float().sin().sum() for s in state)
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return [y, *state, *grads]


def unsupported(name, hidden) -> str | None:
    """Why the Triton backend does not run variant ``name`` at ``hidden`` units, or None."""
    family, options = VARIANTS[name]
    try:
        _layer(family, options, "triton", hidden, torch.float32)
    except ValueError as error:  # a named backend is checked when the layer is built
        return str(error)
    return None


def check(names, hidden, batch, steps) -> list[str]:
    """Every variant against the float32 reference at one shape; returns the failures."""
    failures = []
    for name in names:
        family, options = VARIANTS[name]
        if (reason := unsupported(name, hidden)) is not None:
            print(f"skip {name:32s} H={hidden}: {reason}", flush=True)
            continue
        reference = _layer(family, options, "reference", hidden, torch.float32)
        x = torch.randn(steps, batch, INPUT, device=DEVICE)
        expected = _outputs(reference, x)
        for dtype, tolerance in CHECK_TOLERANCE.items():
            layer = _layer(family, options, "triton", hidden, dtype)
            layer.load_state_dict(reference.state_dict())
            actual = _outputs(layer, x.to(dtype))
            error = max(_relative_error(a, e) for a, e in zip(actual, expected, strict=True))
            verdict = "ok  " if error <= tolerance else "FAIL"
            print(f"{verdict} {name:32s} {str(dtype)[6:]:9s} B={batch:<3d} T={steps} H={hidden}: "
                  f"max relative error {error:.2e} (limit {tolerance:.0e})", flush=True)
            if error > tolerance:
                failures.append(f"{name} {dtype} B={batch}")
    return failures


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().float(), expected.detach().float()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def _median_ms(fn, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    if DEVICE.type != "cuda":  # --dry-run
        return statistics.median(_wall_ms(fn) for _ in range(reps))
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _wall_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_layer(layer, batch, steps, dtype, reps, warmup) -> tuple[float, float]:
    """(forward ms without grad, forward+backward ms with the input's gradient)."""
    x = torch.randn(steps, batch, layer.input_size, device=DEVICE, dtype=dtype)
    x_grad = x.clone().requires_grad_()
    with torch.no_grad():
        y = layer(x)[0]
    grad = torch.randn_like(y)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer(x_grad)[0].backward(grad)

    return _median_ms(forward, reps, warmup), _median_ms(forward_backward, reps, warmup)


def _cudnn(family, hidden, dtype):
    torch.manual_seed(0)
    module = (torch.nn.LSTM if family is LSTM else torch.nn.GRU)(INPUT, hidden)
    return module.to(DEVICE, dtype)


def benchmark(names, dtypes, sizes, reps, warmup, reference_reps) -> list[dict]:
    rows = []

    def record(size, dtype_name, impl, family, times):
        rows.append(dict(size=size, dtype=dtype_name, impl=impl, family=family,
                         fwd=times[0], fwdbwd=times[1]))
        print(f"{size:18s} {dtype_name:5s} {impl:40s} {times[0]:9.3f} {times[1]:9.3f} ms",
              flush=True)

    for label, batch, steps, hidden in sizes:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            for family in (LSTM, GRU):
                cudnn = _cudnn(family, hidden, dtype)
                record(label, dtype_name, f"cuDNN nn.{family.__name__}", family.__name__,
                       time_layer(cudnn, batch, steps, dtype, reps, warmup))
            if dtype_name == "fp32":
                layer = _layer(LSTM, {}, "reference", hidden, dtype)
                record(label, dtype_name, "reference loop lstm", "LSTM",
                       time_layer(layer, batch, steps, dtype, reference_reps, 1))
            # float16 behaves as bfloat16 in the kernels: the plain layers say enough
            for name in [n for n in names if (dtype_name != "fp16" or n in QUICK)
                         and unsupported(n, hidden) is None]:
                family, options = VARIANTS[name]
                layer = _layer(family, options, "triton", hidden, dtype).train()
                record(label, dtype_name, f"triton {name}", family.__name__,
                       time_layer(layer, batch, steps, dtype, reps, warmup))
    return rows


def table(rows, header) -> str:
    """Markdown: times and ratios to cuDNN's plain layer of the same family, size and dtype."""
    cudnn = {(r["size"], r["dtype"], r["family"]): r for r in rows if r["impl"].startswith("cuDNN")}
    lines = [*header, "",
             "| size | dtype | implementation | forward ms | fwd+bwd ms | forward / cuDNN "
             "| fwd+bwd / cuDNN |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        base = cudnn[(r["size"], r["dtype"], r["family"])]
        lines.append(f"| {r['size']} | {r['dtype']} | {r['impl']} | {r['fwd']:.3f} | "
                     f"{r['fwdbwd']:.3f} | {r['fwd'] / base['fwd']:.2f}x | "
                     f"{r['fwdbwd'] / base['fwdbwd']:.2f}x |")
    return "\n".join(lines + ["", *_targets(rows)]) + "\n"


def _targets(rows) -> list[str]:
    """Issue 5's targets, per size and dtype: the slowest Triton variant's forward+backward
    against cuDNN's plain LSTM (within 2x at B=16; faster at small batch)."""
    lines = ["Slowest Triton variant, forward+backward, against cuDNN's plain nn.LSTM:", ""]
    for size, dtype in dict.fromkeys((r["size"], r["dtype"]) for r in rows):
        here = [r for r in rows if (r["size"], r["dtype"]) == (size, dtype)]
        lstm = next(r for r in here if r["impl"] == "cuDNN nn.LSTM")
        ours = [r for r in here if r["impl"].startswith("triton")]
        if ours:
            worst = max(ours, key=lambda r: r["fwdbwd"])
            ratio = worst["fwdbwd"] / lstm["fwdbwd"]
            lines.append(f"- {size} {dtype}: {worst['impl']} {ratio:.2f}x "
                         f"({worst['fwdbwd']:.3f} ms against {lstm['fwdbwd']:.3f} ms)")
    return lines


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"variants {QUICK} only")
    parser.add_argument("--tests", action="store_true",
                        help="run pytest tests/kernels/triton on this GPU first")
    parser.add_argument("--skip", nargs="*", default=[], help="variant names to leave out")
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reference-reps", type=int, default=2)
    parser.add_argument("--check-steps", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/triton_gpu.md"))
    parser.add_argument("--families", nargs="*", default=["lstm", "xlstm"],
                        choices=["lstm", "xlstm"], help="LSTM/GRU, sLSTM/mLSTM, or both")
    parser.add_argument("--with-cuda-peers", action="store_true",
                        help="also FlashRNN's cuda_fused sLSTM (nvcc compiles it: minutes)")
    parser.add_argument("--dry-run", action="store_true",
                        help="toy sizes on the CPU under Triton's interpreter: checks the script")
    args = parser.parse_args()
    sizes, sizes_m, sizes_s = SIZES, xlstm.MLSTM_SIZES, xlstm.SLSTM_SIZES
    if args.dry_run:
        global DEVICE
        DEVICE, sizes = torch.device("cpu"), DRY_SIZES
        sizes_m, sizes_s = xlstm.DRY_MLSTM, xlstm.DRY_SLSTM
        args.dtypes = [d for d in args.dtypes if d != "bf16"]  # the interpreter gets it wrong
        CHECK_TOLERANCE.pop(torch.bfloat16)
        CHECK_TOLERANCE[torch.float16] = 3e-2
    elif not torch.cuda.is_available():
        print("triton_gpu: expected a CUDA GPU, found none (--dry-run checks the script on the "
              "CPU)", file=sys.stderr)
        return 2
    elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("triton_gpu: unset TRITON_INTERPRET to run the compiled kernels", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, here and in cuDNN
    torch.backends.cudnn.allow_tf32 = False
    names = [n for n in (QUICK if args.quick else VARIANTS) if n not in args.skip]
    device = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "CPU (dry run)"
    print(f"GPU: {device}", flush=True)
    if args.tests:
        paths = ["tests/kernels/triton"] if "lstm" in args.families else [
            f"tests/kernels/triton/test_{n}.py" for n in ("mlstm", "slstm", "xlstm")]
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", *paths])
        if result.returncode:
            print("triton_gpu: the Triton tests failed on this GPU; not timing", file=sys.stderr)
            return 1
    # float16 behaves as bfloat16 in the kernels; the interpreter checks float16 only
    xlstm_dtypes = [d for d in args.dtypes if d != "fp16" or args.dry_run]
    failures = []
    if "lstm" not in args.families:
        sizes = []
    for _, batch, steps, hidden in sizes:
        failures += check(names, hidden, batch, min(steps, args.check_steps))
    if "xlstm" in args.families:
        failures += xlstm.check(DEVICE, [DTYPES[d] for d in xlstm_dtypes],
                                sizes_m, sizes_s, args.check_steps, args.with_cuda_peers)
    if failures:
        print(f"triton_gpu: {len(failures)} checks failed ({', '.join(failures)}); not timing",
              file=sys.stderr)
        return 1
    rows = benchmark(names, args.dtypes, sizes, args.reps, args.warmup, args.reference_reps)
    xlstm_rows = []
    if "xlstm" in args.families:
        xlstm_rows = xlstm.benchmark(DEVICE, {d: DTYPES[d] for d in xlstm_dtypes},
                                     sizes_m, sizes_s, args.reps, args.warmup,
                                     args.with_cuda_peers, _median_ms)
    import triton

    header = [f"GPU: {device}; torch {torch.__version__}, triton {triton.__version__}; "
              f"{datetime.date.today()}; `python {' '.join(sys.argv)}`",
              "TF32 off. Forward without grad; fwd+bwd includes the input's gradient. Median of "
              f"{args.reps} runs (reference loop: {args.reference_reps})."]
    text = table(rows, header) if rows else "\n".join(header) + "\n"
    if xlstm_rows:
        text += "\n" + "\n".join(["## xLSTM", "", *xlstm.table(xlstm_rows)]) + "\n"
    print(text)
    _write_atomically(args.out, text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
