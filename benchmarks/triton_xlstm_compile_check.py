"""Compile the xLSTM Triton kernels (chunkwise mLSTM, sLSTM recurrence) for a GPU target,
without a GPU.

As benchmarks/triton_compile_check.py does for the LSTM and GRU: runs the scans on CPU tensors
with the launches recorded (nothing executes), compiles each distinct launch ahead of time for
the target (sm_90, H100, by default) with the triton wheel's ptxas, and prints registers and
spills per kernel. It catches what Triton's interpreter does not: GPU-only compile errors and
register pressure at realistic head sizes.

Usage: python benchmarks/triton_xlstm_compile_check.py [--arch 90] [--quick]
"""

from __future__ import annotations

import argparse
import sys

import torch
from triton.backends.compiler import GPUTarget
from triton_compile_check import _record, compile_and_report  # exits under the interpreter

from lstmkit.cells.mlstm import mLSTMState
from lstmkit.cells.slstm import sLSTMState
from lstmkit.kernels.triton import common, mlstm, slstm

MLSTM = [  # label, B, NH, T, DK, DV, chunk
    ("mlstm DK=DV=64 L=64", 2, 2, 128, 64, 64, 64),
    ("mlstm DK=DV=256 L=64", 1, 2, 128, 256, 256, 64),
]
SLSTM = [  # label, B, NH, DH
    ("slstm DH=16 (held)", 4, 4, 16),
    ("slstm DH=64 (held)", 16, 4, 64),
    ("slstm DH=192", 16, 4, 192),
    ("slstm DH=4, 4 heads a program", 16, 8, 4),
]


def _mlstm_launches(B, NH, T, DK, DV, chunk, dtype):
    calls = []

    def record(kernel, grid, *args, **constexprs):
        calls.append((kernel, args, constexprs, mlstm._WARPS[kernel.__name__]))

    launch, mlstm._launch = mlstm._launch, record
    try:
        q, k = (torch.randn(B, NH, T, DK, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(B, NH, T, DV, dtype=dtype, requires_grad=True)
        i, f = (torch.randn(B, NH, T, dtype=dtype, requires_grad=True) for _ in range(2))
        state = mLSTMState(torch.zeros(B, NH, DK, DV, dtype=dtype),
                           torch.zeros(B, NH, DK, dtype=dtype), torch.zeros(B, NH, dtype=dtype))
        h, _ = mlstm.chunkwise(q, k, v, i, f, state, chunk, 1e-6, "sigmoid")
        h.float().sum().backward()
    finally:
        mlstm._launch = launch
    return calls


def _slstm_launches(B, NH, DH, dtype):
    calls = []
    launch, common.launch = common.launch, _record(calls)
    try:
        H = NH * DH
        xs = torch.randn(3, B, 4 * H, dtype=dtype, requires_grad=True)
        r = torch.randn(NH, DH, 4, DH, dtype=dtype, requires_grad=True)
        state = sLSTMState(*(torch.zeros(B, H, dtype=dtype) for _ in range(4)))
        y, _ = slstm.scan(xs, r, state, torch.full((B,), 3), "sigmoid", "nxai")
        y.float().sum().backward()
    finally:
        common.launch = launch
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, 90 = H100")
    parser.add_argument("--quick", action="store_true", help="bfloat16 and float32 only")
    args = parser.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    dtypes = [torch.bfloat16, torch.float32]
    if not args.quick:
        dtypes += [torch.float16, torch.float64]
    cases = [(label, lambda d, c=case: _mlstm_launches(*c, d)) for label, *case in MLSTM]
    cases += [(label, lambda d, c=case: _slstm_launches(*c, d)) for label, *case in SLSTM]
    failures = 0
    for dtype in dtypes:
        for label, launches in cases:
            for kernel, kargs, constexprs, warps in launches(dtype):
                name = f"{label} {str(dtype)[6:]} {kernel.fn.__name__}"
                failures += not compile_and_report(name, kernel, kargs, constexprs, warps,
                                                   target, args.arch)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
