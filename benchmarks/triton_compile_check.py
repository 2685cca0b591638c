"""Compile every Triton kernel variant lstmkit launches for a GPU target, without a GPU.

Runs the LSTM and GRU scans on CPU tensors with the launches intercepted (nothing executes),
then compiles each distinct launch ahead of time for the target (sm_90, H100, by default) with
the ptxas bundled in the triton wheel, and prints registers and spills per kernel. It catches
what Triton's interpreter does not: GPU-only compile errors (dot shapes, atomics, layouts) and
register pressure of the persistent variants.

Usage: python benchmarks/triton_compile_check.py [--arch 90] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("triton_compile_check: unset TRITON_INTERPRET (it compiles for a GPU)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from lstmkit.cells import family_of  # noqa: E402
from lstmkit.config import cell_config  # noqa: E402
from lstmkit.kernels.contract import StepMasks  # noqa: E402
from lstmkit.kernels.triton import common, gru, lstm  # noqa: E402

_TYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16",
          torch.float16: "fp16", torch.int32: "i32"}


def _signature(kernel, args, constexprs):
    names = kernel.arg_names
    sig = {}
    for name, value in zip(names, args, strict=False):  # constexprs follow
        if isinstance(value, torch.Tensor):
            sig[name] = "*" + _TYPES[value.dtype]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    for name in constexprs:
        sig[name] = "constexpr"
    return sig


def _record(calls):
    def fake_launch(kernel, plan, grid, steps, *args, **constexprs):
        blocks = dict(BLOCK_B=plan.block_b, BLOCK_H=plan.block_h, BLOCK_K=plan.block_k,
                      HOLD=plan.hold and plan.persistent, SYNC=plan.sync)
        calls.append((kernel, args + (0, steps), {**blocks, **constexprs}, plan.num_warps))
    return fake_launch


def _run(cfg, plans, batch, steps, dtype, masks):
    module = {"lstm": lstm, "gru": gru}[cfg.family]
    family = family_of(cfg)
    planner = module.plans
    module.plans = lambda *_: plans
    w = {n: torch.randn(s, dtype=dtype, requires_grad=True)
         for n, s in family.parameters(cfg).items()}
    x = torch.randn(steps, batch, cfg.input_size, dtype=dtype)
    state = family.make_state(*(torch.zeros(batch, *shape, dtype=dtype)
                                for shape in family.state_shapes(cfg)))
    try:
        y, _ = module.scan(cfg, w, x, state, torch.full((batch,), steps),
                           masks(batch, steps, cfg, dtype))
        y.sum().backward()
    finally:
        module.plans = planner


def _ptxas_stats(ptx: str, arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path  # the one triton itself runs for this arch
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}",
                              "-v", str(src), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(" | ".join(out.stderr.strip().splitlines()[:3]))
    out = out.stderr
    regs = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores", out)
    return f"{regs.group(1) if regs else '?'} regs, {spills.group(1) if spills else '?'} B spilled"


def _no_masks(batch, steps, cfg, dtype):
    return StepMasks()


def _all_masks(batch, steps, cfg, dtype):
    shapes = family_of(cfg).state_shapes(cfg)
    return StepMasks(torch.ones(batch, cfg.output_size, dtype=dtype),
                     tuple(torch.ones(steps, batch, *s, dtype=dtype) for s in shapes))


CASES = [  # label, config, batch, masks
    ("lstm H=768", cell_config("lstm", 768, 768), 16, _no_masks),
    ("lstm H=768 B=1024", cell_config("lstm", 768, 768), 1024, _no_masks),
    ("lstm options H=768", cell_config("lstm", 768, 768, peephole=True, cell_clip=3.0,
                                      gate_activation="hard_sigmoid"), 16, _all_masks),
    ("lstm H=64", cell_config("lstm", 64, 64), 4, _no_masks),
    ("lstm ln+proj H=256", cell_config("lstm", 64, 256, layer_norm=True, proj_size=128,
                                      coupled=True), 4, _all_masks),
    ("gru H=768", cell_config("gru", 768, 768), 16, _all_masks),
    ("gru reset-before H=128", cell_config("gru", 64, 128, reset_after=False), 4, _all_masks),
]


def _plans(module, cfg, batch, sms):
    """The plans lstmkit makes on a CUDA device with ``sms`` multiprocessors."""
    properties = torch.cuda.get_device_properties
    torch.cuda.get_device_properties = lambda d: type("P", (), {"multi_processor_count": sms})
    try:
        return module.plans(cfg, batch, torch.device("cuda"))
    finally:
        torch.cuda.get_device_properties = properties


def _launches(cfg, plans, batch, dtype, masks):
    calls = []
    launch = common.launch
    common.launch = _record(calls)
    try:
        _run(cfg, plans, batch, 3, dtype, masks)
    finally:
        common.launch = launch
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, 90 = H100")
    parser.add_argument("--sms", type=int, default=132, help="multiprocessors the plans assume")
    parser.add_argument("--quick", action="store_true", help="bfloat16 and float32 only")
    args = parser.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    dtypes = [torch.bfloat16, torch.float32]
    if not args.quick:
        dtypes += [torch.float16, torch.float64]
    failures = 0
    for dtype in dtypes:
        for label, cfg, batch, masks in CASES:
            module = lstm if cfg.mode == "lstm" else gru
            plans = _plans(module, cfg, batch, args.sms)
            for kernel, kargs, constexprs, warps in _launches(cfg, plans, batch, dtype, masks):
                flags = [f for f in ("SYNC", "HOLD") if constexprs[f]]
                mode = " ".join(["persistent" if plans[0].persistent else "per-step", *flags])
                name = f"{label} {str(dtype)[6:]} {kernel.fn.__name__} [{mode}]"
                failures += not compile_and_report(name, kernel, kargs, constexprs, warps,
                                                   target, args.arch)
    return 1 if failures else 0


def compile_and_report(name, kernel, kargs, constexprs, warps, target, arch) -> bool:
    """Compile one recorded launch for ``target`` and print its registers and spills, or why it
    failed (every variant is reported; the caller fails at the end)."""
    try:
        src = ASTSource(kernel, _signature(kernel, kargs, constexprs), constexprs)
        compiled = triton.compile(src, target=target, options=dict(num_warps=warps))
        print(f"ok   {name}: {_ptxas_stats(compiled.asm['ptx'], arch)}", flush=True)
        return True
    except Exception as error:
        print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        return False


if __name__ == "__main__":
    sys.exit(main())
