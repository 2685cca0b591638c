"""The cpu backend's matrix products, path against path, at the shapes its LSTM kernels make.

The fused kernels spend most of a large step in float products (src/lstmkit/kernels/cpu/
matmul.h). This times each product shape of an LSTM layer of size (T, B, I, H) through every
path matmul.h can take, one thread, in this process's CPU time (robust to other jobs
preempting it), peers interleaved round by round, and prints the median GFLOP/s of each:

- ``packed``: ``RightOperand::times``, oneDNN's brgemm ukernel on weights packed in column
  panels four vector registers wide (what the kernels run); ``pack`` is the packing itself,
  once per call;
- ``brgemm``: ``brgemm_tiles``, the ukernel on the plain row-major layout;
- ``sgemm``: ``gemm()``, the BLAS symbol torch exports (MKL here), called directly;
- ``torch.mm``: the same product through ATen's dispatcher, as a yardstick.

The weight gradients dW (N, K) = g^T x, summed over the backward pass's chunks of rows, are
timed as the kernels make them on this CPU (``kernel``: ``WeightGradient::add``), as brgemm on
g's plain layout (``tiles``: transpose x's chunk, then ``brgemm_tiles``, what AVX-512 CPUs
run) and as one sgemm call per chunk on the untransposed operands.

    PYTHONPATH=src python benchmarks/cpu_products.py                      # (50, 64, 512, 512)
    PYTHONPATH=src python benchmarks/cpu_products.py --size 100,32,128,256

It builds a small extension on the kernels' headers on first use (half a minute), in
``$TORCH_EXTENSIONS_DIR``. Prints only.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import _report
import torch
from cpu_kernels import _size

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ROOT / "src" / "lstmkit" / "kernels" / "cpu"

SOURCE = r"""
#include <torch/extension.h>
#include <time.h>
#include "matmul.h"

using namespace lstmkit;

static double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// CPU seconds of `reps` products c (M, N) = a (M, K) @ B (K, N) + c through `path`, B built
// from a weight w: w (N, K) when `weight_nk` (B = w^T, a forward product), else w (K, N).
double product(const std::string& path, int64_t M, int64_t N, int64_t K, bool weight_nk,
               int64_t reps) {
  auto o = at::TensorOptions().dtype(at::kFloat);
  Tensor a = at::randn({M, K}, o), c = at::zeros({M, N}, o);
  Tensor w = weight_nk ? at::randn({N, K}, o) : at::randn({K, N}, o);
  Tensor b = weight_nk ? w.t().contiguous() : w;  // (K, N) row-major
  const float *pa = a.data_ptr<float>(), *pw = w.data_ptr<float>(), *pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  std::optional<RightOperand<float>> packed;
  if (path == "packed") packed.emplace(pw, K, N, weight_nk, o);
  const double t0 = cpu_seconds();
  for (int64_t r = 0; r < reps; ++r) {
    if (path == "packed") {
      packed->times(M, pa, K, 1.0f, pc, N);
    } else if (path == "pack") {
      RightOperand<float> fresh(pw, K, N, weight_nk, o);
    } else if (path == "brgemm") {
      brgemm_tiles(M, N, K, pa, K, pb, N, true, pc, N);
    } else if (path == "sgemm") {
      gemm<float>(false, weight_nk, M, N, K, pa, K, pw, weight_nk ? K : N, 1.0f, pc, N);
    } else if (path == "torch.mm") {
      at::addmm_out(c, c, a, weight_nk ? w.t() : w);
    } else {
      TORCH_CHECK(false, "unknown path ", path);
    }
  }
  return cpu_seconds() - t0;
}

// CPU seconds of `reps` weight gradients dW (N, K) = g^T x summed over chunks of `rows` rows
// of g (rows, N) and x (rows, K): "kernel" as WeightGradient does it on this CPU, "tiles" by
// brgemm on g's plain layout (transpose x, then brgemm_tiles: the AVX-512 path), "sgemm" in
// one BLAS call per chunk on the untransposed operands (dW^T = x^T g into a (K, N) sum).
double weight_gradient_time(const std::string& path, int64_t rows, int64_t N, int64_t K,
                            int64_t reps) {
  auto o = at::TensorOptions().dtype(at::kFloat);
  Tensor g = at::randn({rows, N}, o), x = at::randn({rows, K}, o);
  const float *pg = g.data_ptr<float>(), *px = x.data_ptr<float>();
  WeightGradient<float> kernel(N, K, o);
  Tensor sum = at::zeros({K, N}, o);
  const double t0 = cpu_seconds();
  for (int64_t r = 0; r < reps; ++r) {
    if (path == "kernel") {
      kernel.add(rows, pg, N, px, K);
    } else if (path == "tiles") {
      Tensor xt = transposed(px, rows, K, K, o);
      brgemm_tiles(K, N, rows, xt.data_ptr<float>(), rows, pg, N, true, sum.data_ptr<float>(), N);
    } else if (path == "sgemm") {
      gemm<float>(true, false, K, N, rows, px, K, pg, N, 1.0f, sum.data_ptr<float>(), N);
    } else {
      TORCH_CHECK(false, "unknown path ", path);
    }
  }
  return cpu_seconds() - t0;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("product", &product);
  m.def("weight_gradient", &weight_gradient_time);
}
"""

PRODUCT_PATHS = ("packed", "brgemm", "sgemm", "torch.mm")


def extension():
    from torch.utils.cpp_extension import load_inline

    from lstmkit.kernels.cpu import _build

    return load_inline("lstmkit_cpu_products", cpp_sources=[SOURCE],
                       extra_include_paths=[str(HEADERS)], extra_cflags=_build._FLAGS,
                       extra_ldflags=["-fopenmp"], verbose=False)


def shapes(size) -> tuple[list[tuple[str, int, int, int, bool]], int]:
    """(what, M, N, K, weight_nk) of each product an LSTM layer of ``size`` makes, as the
    kernels chunk it (lstm.h, lstm_backward.h), and the rows of a backward chunk."""
    steps, batch, inputs, hidden = size
    gates = 4 * hidden
    chunk = max(1, 65536 // (batch * gates))  # common.h chunk_steps
    back = max(chunk, -(-256 // batch))  # common.h backward_chunk
    return [
        ("forward input term, all steps", steps * batch, gates, inputs, True),
        (f"forward input term, {min(chunk, steps)} step(s)", min(chunk, steps) * batch, gates,
         inputs, True),
        ("forward recurrent, per step", batch, gates, hidden, True),
        ("backward dh, per step", batch, hidden, gates, False),
        (f"backward dx, per {back}-step chunk", min(back, steps) * batch, inputs, gates, False),
    ], min(back, steps) * batch


def timed(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per round of each function, interleaved."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_size, default=(50, 64, 512, 512), metavar="T,B,I,H")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    parser.add_argument("--flops", type=float, default=3e8,
                        help="multiply-adds per timed call and path (sets the repeats)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ext = extension()
    print(f"Machine: {_report.machine('1 thread; CPU flags ' + _report.cpu_flags())}")
    print(f"Size (T, B, I, H) = {args.size}; median GFLOP/s over {args.rounds} rounds, "
          "CPU time, one thread")
    products, rows = shapes(args.size)
    for what, m, n, k, weight_nk in products:
        reps = max(1, int(args.flops / (m * n * k)))
        fns = {p: functools.partial(ext.product, p, m, n, k, weight_nk, reps)
               for p in (*PRODUCT_PATHS, "pack")}
        result = timed(fns, args.rounds)
        rates = "  ".join(f"{p} {2 * m * n * k * reps / result[p] / 1e9:6.1f}"
                          for p in PRODUCT_PATHS)
        print(f"{what:34s} ({m} x {k}) @ ({k} x {n}): {rates}  "
              f"[pack {result['pack'] / reps * 1e3:.3f} ms]")
    _, batch, inputs, hidden = args.size
    for name, k in (("dW_ih", inputs), ("dW_hh", hidden)):
        n = 4 * hidden
        reps = max(1, int(args.flops / (rows * n * k)))
        result = timed({p: functools.partial(ext.weight_gradient, p, rows, n, k, reps)
                        for p in ("kernel", "tiles", "sgemm")}, args.rounds)
        rates = "  ".join(f"{p} {2 * rows * n * k * reps / s / 1e9:6.1f}"
                          for p, s in result.items())
        print(f"{'backward ' + name + ', per chunk':34s} ({k} x {rows}) @ ({rows} x {n}): {rates}")
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - start:.0f} s)")
    sys.exit(code)
