"""How closely lstmkit's mLSTM and sLSTM agree with NX-AI's implementations: the largest absolute
differences of outputs and gradients, in float64 and (against float64 truth) in float32,
bfloat16 and float16. The 16-bit rows measure against float64 computed from the same 16-bit
inputs (the kernel's own error, outputs rounded once), and against the float64 truth of the
unrounded float64 inputs (what a user of 16-bit inputs gets in all).

    PYTHONPATH=src python benchmarks/xlstm_agreement.py

The tests (tests/functional, tests/test_nxai.py) assert these at torch's float64 tolerances
(rtol 1e-10, atol 1e-12); this script prints the levels reached, for docs/xlstm.md.
"""

from __future__ import annotations

import math

import torch
from mlstm_kernels.torch import get_mlstm_kernel
from mlstm_kernels.torch.recurrent.native_sequence import mlstm_recurrent_sequence__native_fw
from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig

from lstmkit.functional import mlstm, slstm

B, NH, T, D = 2, 4, 128, 32


def largest(a, b) -> str:
    return f"{(a.double() - b.double()).abs().max().item():.1e}"


def grads(out, inputs):
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(9),
                         dtype=torch.float64).to(out.dtype)  # the same values in every dtype
    return torch.autograd.grad((out * weight).sum(), inputs)


def mlstm_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(B, NH, T, D, generator=g, dtype=torch.float64) for _ in range(3)]
    args += [torch.randn(B, NH, T, generator=g, dtype=torch.float64),
             torch.randn(B, NH, T, generator=g, dtype=torch.float64) + 3.0]
    return [t.to(dtype).requires_grad_() for t in args]


def mlstm_rows() -> list[str]:
    rows = []
    x64 = mlstm_inputs(torch.float64)
    truth = mlstm(*x64, form="recurrent")
    g_truth = grads(truth, x64)
    minus_inf = (torch.zeros(B, NH, D, D, dtype=torch.float64),
                 torch.zeros(B, NH, D, dtype=torch.float64),
                 torch.full((B, NH), -math.inf, dtype=torch.float64))
    theirs = {
        "mlstm_kernels chunkwise--native_autograd":
            lambda a: get_mlstm_kernel("chunkwise--native_autograd")(*a, chunk_size=64),
        "mlstm_kernels recurrent native_sequence":
            lambda a: mlstm_recurrent_sequence__native_fw(*a, dtype_state=a[0].dtype),
    }
    for name, fn in theirs.items():
        out = fn(x64)
        rows.append(f"| mLSTM, lstmkit recurrent vs {name} | float64 | {largest(out, truth)} | "
                    f"{max(float(largest(a, b)) for a, b in zip(grads(out, x64), g_truth)):.1e} |")
    par = get_mlstm_kernel("parallel--native_autograd")(*x64)
    ours = mlstm(*x64, form="parallel", state=minus_inf)
    worst = max(float(largest(a, b)) for a, b in zip(grads(ours, x64), grads(par, x64)))
    rows.append(f"| mLSTM, lstmkit parallel (m_0 = -inf) vs mlstm_kernels parallel"
                f"--native_autograd | float64 | {largest(ours, par)} | {worst:.1e} |")
    rows.append(f"| mLSTM, lstmkit default (m_0 = 0) vs mlstm_kernels parallel (eps weighs "
                f"differently) | float64 | {largest(truth, par)} | |")
    for form in ("chunkwise", "parallel"):
        out = mlstm(*x64, form=form)
        rows.append(f"| mLSTM, lstmkit {form} vs lstmkit recurrent | float64 | "
                    f"{largest(out, truth)} | "
                    f"{max(float(largest(a, b)) for a, b in zip(grads(out, x64), g_truth)):.1e} |")
    x32 = [t.detach().float().requires_grad_() for t in x64]
    for name, fn in {"lstmkit chunkwise": lambda a: mlstm(*a),
                     **theirs}.items():
        rows.append(f"| mLSTM, {name} vs float64 truth | float32 | "
                    f"{largest(fn(x32), truth)} | |")
    return rows


def slstm_rows() -> list[str]:
    H, heads = 64, 4
    config = sLSTMCellConfig(hidden_size=H, num_heads=heads, backend="vanilla",
                             dtype="float32", enable_automatic_mixed_precision=False)
    cell64 = sLSTMCell(config).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        cell64._recurrent_kernel_.normal_(0.0, 0.2, generator=g)
        cell64._bias_.normal_(generator=g)
    x64 = torch.randn(B, T, 4 * H, generator=g, dtype=torch.float64)
    rows, truth = [], None
    for dtype in (torch.float64, torch.float32):
        cell = sLSTMCell(config).to(dtype)
        cell.load_state_dict(cell64.state_dict())
        x = x64.to(dtype).requires_grad_()
        y = cell(x)[0].permute(0, 2, 1, 3).flatten(2)
        bias = cell.bias.clone().transpose(0, 1).flatten()
        r = cell.recurrent_kernel.clone().requires_grad_()
        h = slstm(x + bias, r)
        if dtype == torch.float64:
            d_ours = grads(h, (x, r))
            d_theirs = grads(y, (x, cell._recurrent_kernel_))
            d_r = cell._recurrent_kernel_int2ext(d_theirs[1])
            worst = max(float(largest(d_ours[0], d_theirs[0])), float(largest(d_ours[1], d_r)))
            rows.append(f"| sLSTM, lstmkit vs xlstm vanilla | float64 | {largest(h, y)} | "
                        f"{worst:.1e} |")
            truth = h.detach()
        else:
            rows.append(f"| sLSTM, lstmkit vs float64 truth | float32 | {largest(h, truth)} | |")
            rows.append(f"| sLSTM, xlstm vanilla vs float64 truth | float32 | "
                        f"{largest(y, truth)} | |")
    return rows


def half_rows() -> list[str]:
    """lstmkit's chunkwise mLSTM and sLSTM with 16-bit inputs (float32 state and arithmetic),
    and mlstm_kernels' chunkwise native kernel on the same inputs (16-bit arithmetic)."""
    rows = []
    g = torch.Generator().manual_seed(1)
    H = 64
    slstm_args = [torch.randn(B, T, 4 * H, generator=g, dtype=torch.float64),
                  0.2 * torch.randn(4, H // 4, 4, H // 4, generator=g, dtype=torch.float64)]
    peers = {"mLSTM, lstmkit chunkwise": (lambda a: mlstm(*a), mlstm_inputs(torch.float64)),
             "mLSTM, mlstm_kernels chunkwise--native_autograd": (
                 lambda a: get_mlstm_kernel("chunkwise--native_autograd")(*a, chunk_size=64),
                 mlstm_inputs(torch.float64)),
             "sLSTM, lstmkit": (lambda a: slstm(*a), [t.requires_grad_() for t in slstm_args])}
    for dtype in (torch.bfloat16, torch.float16):
        for name, (fn, x64) in peers.items():
            low = [t.detach().to(dtype).requires_grad_() for t in x64]
            same = [t.detach().double().requires_grad_() for t in low]
            truth = mlstm(*same) if name.startswith("mLSTM") else slstm(*same)
            out = fn(low)
            pairs = list(zip(grads(out, low), grads(truth, same)))
            worst = max(float(largest(a, b)) for a, b in pairs)
            top = max(float(b.abs().max()) for _, b in pairs)
            full = mlstm(*x64) if name.startswith("mLSTM") else slstm(*x64)
            kind = str(dtype)[6:]
            rows.append(f"| {name}, {kind} inputs vs float64 of the same inputs | {kind} | "
                        f"{largest(out, truth)} of max {float(truth.detach().abs().max()):.2g} | "
                        f"{worst:.1e} of max {top:.2g} |")
            rows.append(f"| {name}, {kind} inputs vs float64 truth of the float64 inputs | "
                        f"{kind} | {largest(out, full)} | |")
    return rows


def main() -> None:
    torch.set_num_threads(1)
    print(f"B={B}, NH={NH}, T={T}, D={D} (sLSTM: H=64, 4 heads); largest absolute differences\n")
    print("| comparison | dtype | outputs | gradients |\n|---|---|---:|---:|")
    for row in mlstm_rows() + slstm_rows() + half_rows():
        print(row)


if __name__ == "__main__":
    main()
