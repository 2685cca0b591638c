"""The xLSTM part of benchmarks/triton_gpu.py: lstmkit's Triton kernels for the chunkwise mLSTM
and the sLSTM recurrence, checked and timed against lstmkit's torch forms and NX-AI's kernels.

Peers, each imported only if installed (``pip install mlstm_kernels flashrnn``; a missing or
failing one is reported and skipped, never a reason to stop):

* mlstm_kernels' Triton chunkwise kernels ``chunkwise--triton_xl_chunk`` and
  ``chunkwise--triton_limit_chunk`` (NX-AI's, the same function: zero initial state, eps 1e-6,
  q scaled by DK^-1/2), checked against lstmkit's and timed beside it;
* FlashRNN's fused sLSTM, Triton (``triton_fused``) and, with ``--with-cuda-peers``, CUDA
  (``cuda_fused``, compiled by nvcc on first use: minutes). FlashRNN's sLSTM is timed only: its
  cell is not lstmkit's (nor xlstm's vanilla sLSTM) number for number, so there is no check.

lstmkit's own rows: the Triton kernels (``backend="triton"``) and the torch forms
(``backend="torch"``: the chunkwise form's batched products, the sLSTM scan with its
hand-written backward), the latter also the reference of the checks.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from lstmkit.functional import mlstm, slstm

MLSTM_SIZES = [  # label, B, NH, T, DK = DV
    ("mLSTM B=8 NH=4 T=2048 D=256", 8, 4, 2048, 256),
    ("mLSTM B=16 NH=8 T=1024 D=64", 16, 8, 1024, 64),
]
SLSTM_SIZES = [  # label, B, T, NH, DH
    ("sLSTM B=16 T=1024 H=768 NH=4", 16, 1024, 4, 192),
    ("sLSTM B=16 T=1024 H=768 NH=12", 16, 1024, 12, 64),
]
DRY_MLSTM = [("mLSTM B=1 NH=2 T=64 D=16", 1, 2, 64, 16)]  # mlstm_kernels: T a multiple of 64
DRY_SLSTM = [("sLSTM B=2 T=4 H=32 NH=2", 2, 4, 2, 16)]
CHUNK = 64
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-2}
"""Largest relative error ||a - e|| / ||e|| of lstmkit's kernels against the float32 torch form
(16-bit: the inputs rounded to 16 bits, the truth computed from the rounded inputs)."""
PEER_TOLERANCE = 1e-3
"""Largest relative error of mlstm_kernels' float32 Triton kernels against lstmkit's torch form
(their kernels may use TF32; reported, a larger one only flags the row)."""


def _relative_error(actual, expected) -> float:
    actual, expected = actual.detach().float(), expected.detach().float()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def _mlstm_inputs(B, NH, T, D, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(B, NH, T, D, generator=gen) for _ in range(3))
    i = torch.randn(B, NH, T, generator=gen)
    f = 3.0 + torch.randn(B, NH, T, generator=gen)  # NX-AI's forget-bias range: long memory
    return [t.to(device, dtype) for t in (q, k, v, i, f)]


def _slstm_inputs(B, T, NH, DH, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(B, T, 4 * NH * DH, generator=gen)
    r = torch.randn(NH, DH, 4, DH, generator=gen) / DH ** 0.5
    return [t.to(device, dtype) for t in (x, r)]


def mlstm_implementations(device) -> tuple[dict, dict]:
    """(name -> fn(q, k, v, i, f) -> h, name -> why a peer is missing)."""
    impls = {
        "lstmkit triton": lambda *a: mlstm(*a, chunk_size=CHUNK, backend="triton"),
        "lstmkit torch chunkwise": lambda *a: mlstm(*a, chunk_size=CHUNK, backend="torch"),
    }
    missing = {}
    if importlib.util.find_spec("mlstm_kernels") is None:
        missing["mlstm_kernels"] = "not installed (pip install mlstm_kernels)"
        return impls, missing
    try:
        from mlstm_kernels.torch import get_mlstm_kernel

        for name in ("chunkwise--triton_xl_chunk", "chunkwise--triton_limit_chunk"):
            kernel = get_mlstm_kernel(name)
            impls[f"mlstm_kernels {name}"] = (
                lambda *a, kernel=kernel: kernel(*a, chunk_size=CHUNK,
                                                 autocast_kernel_dtype=a[0].dtype))
    except Exception as error:  # an import that fails on this machine: say so, go on
        missing["mlstm_kernels"] = f"{type(error).__name__}: {error}"
    return impls, missing


def slstm_implementations(device, with_cuda: bool) -> tuple[dict, dict]:
    """(name -> fn(x (B, T, 4H), r (NH, DH, 4, DH)) -> h (B, T, H), name -> why missing)."""
    impls = {
        "lstmkit triton": lambda x, r: slstm(x, r, backend="triton"),
        "lstmkit torch scan": lambda x, r: slstm(x, r, backend="torch"),
    }
    missing = {}
    if importlib.util.find_spec("flashrnn") is None:
        missing["flashrnn"] = "not installed (pip install flashrnn)"
        return impls, missing
    try:
        flashrnn = importlib.import_module("flashrnn").flashrnn
    except Exception as error:
        missing["flashrnn"] = f"{type(error).__name__}: {error}"
        return impls, missing
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

    def peer(backend):
        def run(x, r):
            B, T, G = x.shape
            NH, DH = r.shape[:2]
            wx = x.view(B, T, 4, NH, DH)  # (B, T, G, NH, DH): FlashRNN's input layout
            weight = r.permute(2, 0, 3, 1)  # (4, NH, DH_out, DH_in): its "GHDP"
            bias = x.new_zeros(4, NH, DH)
            h, _ = flashrnn(wx, weight, bias, function="slstm", backend=backend,
                            dtype=names[x.dtype])
            return h[0]  # (B, T, NH, DH): the first state is h
        return run

    impls["flashrnn triton_fused"] = peer("triton_fused")
    if with_cuda:
        impls["flashrnn cuda_fused"] = peer("cuda_fused")
    return impls, missing


def check(device, dtypes, sizes_m, sizes_s, steps: int, with_cuda: bool) -> list[str]:
    """lstmkit's kernels against its float32 torch forms (forward and the inputs' gradients),
    and mlstm_kernels' against the same, over ``steps`` steps (the mLSTM over two chunks at
    least); returns the failures (of lstmkit's kernels only)."""
    failures = []
    m_impls, m_missing = mlstm_implementations(device)
    s_impls, s_missing = slstm_implementations(device, with_cuda)
    for name, why in {**m_missing, **s_missing}.items():
        print(f"skip {name}: {why}", flush=True)
    for label, B, NH, T, D in sizes_m:
        for dtype in dtypes:
            args = _mlstm_inputs(B, NH, min(T, max(steps, 2 * CHUNK)), D, device, dtype)
            exact = [a.float().requires_grad_() for a in args]
            expected = _outputs(m_impls["lstmkit torch chunkwise"], exact)
            for name, fn in m_impls.items():
                if name == "lstmkit torch chunkwise" or (name.startswith("mlstm_kernels")
                                                         and dtype != torch.float32):
                    continue
                failures += _verdict(label, name, dtype, fn, args, expected)
    for label, B, T, NH, DH in sizes_s:
        for dtype in dtypes:
            args = _slstm_inputs(B, min(T, steps), NH, DH, device, dtype)
            exact = [a.float().requires_grad_() for a in args]
            expected = _outputs(s_impls["lstmkit torch scan"], exact)
            failures += _verdict(label, "lstmkit triton", dtype, s_impls["lstmkit triton"], args,
                                 expected)
    return failures


def _outputs(fn, args):
    args = [a.detach().requires_grad_() for a in args]
    h = fn(*args)
    weight = torch.randn(h.shape, generator=torch.Generator().manual_seed(1)).to(h)
    grads = torch.autograd.grad((h * weight).float().sum(), args, allow_unused=True)
    return [h.reshape(h.shape[0], h.shape[1], -1), *grads]


def _verdict(label, name, dtype, fn, args, expected) -> list[str]:
    peer = not name.startswith("lstmkit")
    limit = PEER_TOLERANCE if peer else CHECK_TOLERANCE[dtype]
    try:
        actual = _outputs(fn, args)
    except Exception as error:  # a peer that cannot run here is reported, not fatal
        print(f"{'skip' if peer else 'FAIL'} {label} {name} {str(dtype)[6:]}: "
              f"{type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)
        return [] if peer else [f"{label} {name} {dtype}"]
    errors = [_relative_error(a, e) for a, e in zip(actual, expected) if a is not None]
    error = max(errors)
    verdict = "ok  " if error <= limit else ("DIFF" if peer else "FAIL")
    print(f"{verdict} {label:32s} {name:42s} {str(dtype)[6:]:9s}: max relative error "
          f"{error:.2e} (limit {limit:.0e}; output {errors[0]:.1e})", flush=True)
    return [] if error <= limit or peer else [f"{label} {name} {dtype}"]


def benchmark(device, dtypes, sizes_m, sizes_s, reps, warmup, with_cuda, median_ms) -> list:
    """Rows of (size, dtype, implementation, forward ms, fwd+bwd ms); a peer that fails to run
    is reported and left out."""
    rows = []
    m_impls, _ = mlstm_implementations(device)
    s_impls, _ = slstm_implementations(device, with_cuda)
    work = [(label, _mlstm_inputs(B, NH, T, D, device, torch.float32), m_impls)
            for label, B, NH, T, D in sizes_m]
    work += [(label, _slstm_inputs(B, T, NH, DH, device, torch.float32), s_impls)
             for label, B, T, NH, DH in sizes_s]
    for label, inputs32, impls in work:
        for dtype_name, dtype in dtypes.items():
            inputs = [t.to(dtype) for t in inputs32]
            for name, fn in impls.items():
                try:
                    times = _time(fn, inputs, reps, warmup, median_ms)
                except Exception as error:
                    print(f"skip {label} {name} {dtype_name}: {type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200]}", flush=True)
                    continue
                rows.append(dict(size=label, dtype=dtype_name, impl=name, fwd=times[0],
                                 fwdbwd=times[1]))
                print(f"{label:32s} {dtype_name:5s} {name:42s} {times[0]:9.3f} "
                      f"{times[1]:9.3f} ms", flush=True)
    return rows


def _time(fn, inputs, reps, warmup, median_ms) -> tuple[float, float]:
    leaves = [t.detach().requires_grad_() for t in inputs]
    with torch.no_grad():
        out = fn(*inputs)
    grad = torch.randn_like(out)

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def forward_backward():
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(grad)

    return median_ms(forward, reps, warmup), median_ms(forward_backward, reps, warmup)


def table(rows) -> list[str]:
    """Markdown lines: times, and ratios to the first peer row of the same size and dtype
    (mlstm_kernels' xl_chunk / FlashRNN's triton_fused), else to lstmkit's torch form."""
    lines = ["| size | dtype | implementation | forward ms | fwd+bwd ms | forward / base "
             "| fwd+bwd / base |", "|---|---|---|---:|---:|---:|---:|"]
    for size, dtype in dict.fromkeys((r["size"], r["dtype"]) for r in rows):
        here = [r for r in rows if (r["size"], r["dtype"]) == (size, dtype)]
        peers = [r for r in here if not r["impl"].startswith("lstmkit")]
        own = [r for r in here if "torch" in r["impl"]]
        base = (peers or own or here)[0]
        for r in here:
            lines.append(f"| {size} | {dtype} | {r['impl']} | {r['fwd']:.3f} | "
                         f"{r['fwdbwd']:.3f} | {r['fwd'] / base['fwd']:.2f}x | "
                         f"{r['fwdbwd'] / base['fwdbwd']:.2f}x |")
    return lines + ["", "Base of the ratios: the first peer that ran (mlstm_kernels' "
                    "triton_xl_chunk, FlashRNN's triton_fused), else lstmkit's torch form."]
