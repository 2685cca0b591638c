"""What a second derivative costs: a gradient-penalty training step against a plain one.

A fused backend's backward, asked for a graph (``create_graph=True``), recomputes its scan by
the reference's ops (lstmkit/kernels/second_order.py). This times, side by side in one run, a
plain training step (forward, ``backward``) and a gradient-penalty step (forward, the input
gradient with ``create_graph=True``, then ``backward`` of the loss plus the penalty's squared
norm, as WGAN-GP does) for the cpu backend, the reference backend and torch.nn.LSTM (torch's
own CPU ops, differentiable twice), at two sizes, and writes its section of docs/benchmarks.md
(between the ``second_order`` markers) with the machine named.

    PYTHONPATH=src python benchmarks/second_order.py           # a few minutes
    PYTHONPATH=src python benchmarks/second_order.py --quick   # the small size, no docs written

One thread; best of several loops, the peers taking turns.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402

import torch  # noqa: E402
from _report import best_us, load_note, machine, write_section  # noqa: E402

import lstmkit  # noqa: E402

SIZES = [(50, 16, 32, 64), (100, 32, 128, 256)]
"""(T, B, I, H)."""


def peers(steps: int, batch: int, inputs: int, hidden: int) -> dict:
    torch.manual_seed(0)
    layers = {
        "lstmkit LSTM peephole, backend=cpu": lstmkit.LSTM(inputs, hidden, peephole=True,
                                                           backend="cpu"),
        "lstmkit LSTM peephole, backend=reference": lstmkit.LSTM(inputs, hidden, peephole=True,
                                                                 backend="reference"),
        "lstmkit LSTM, backend=cpu": lstmkit.LSTM(inputs, hidden, backend="cpu"),
        "torch.nn.LSTM": torch.nn.LSTM(inputs, hidden),
    }
    x = torch.randn(steps, batch, inputs)

    def plain(layer):
        def run():
            layer(x)[0].square().mean().backward()
        return run

    def penalty(layer):
        def run():
            xi = x.detach().requires_grad_()
            loss = layer(xi)[0].square().mean()
            (g,) = torch.autograd.grad(loss, xi, create_graph=True)
            (loss + g.square().sum()).backward()
        return run

    out = {}
    for name, layer in layers.items():
        out[(name, "training step")] = plain(layer)
        out[(name, "gradient-penalty step")] = penalty(layer)
    return out


def table(sizes, rounds: int) -> str:
    rows, names = {}, None
    for size in sizes:
        fns = peers(*size)
        names = list(dict.fromkeys(name for name, _ in fns))
        times = best_us({f"{n}|{k}": fn for (n, k), fn in fns.items()}, rounds,
                        loop_seconds=0.5, warmup=2, least=2)
        rows[size] = times
    head = "| ms per step | " + " | ".join(
        f"T={t}, B={b}, I={i}, H={h}" for t, b, i, h in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]

    def cell(size, name, kind):
        return rows[size][f"{name}|{kind}"] / 1e3

    for name in names:
        for kind in ("training step", "gradient-penalty step"):
            lines.append(f"| {name}: {kind} | " + " | ".join(
                f"{cell(s, name, kind):.1f}" for s in sizes) + " |")
    ratios = [
        ("cpu peephole: penalty step / training step", "lstmkit LSTM peephole, backend=cpu",
         "gradient-penalty step", "lstmkit LSTM peephole, backend=cpu", "training step"),
        ("cpu peephole penalty step / reference's", "lstmkit LSTM peephole, backend=cpu",
         "gradient-penalty step", "lstmkit LSTM peephole, backend=reference",
         "gradient-penalty step"),
        ("cpu plain penalty step / torch.nn.LSTM's", "lstmkit LSTM, backend=cpu",
         "gradient-penalty step", "torch.nn.LSTM", "gradient-penalty step"),
    ]
    for label, a, ka, b, kb in ratios:
        lines.append(f"| **{label}** | " + " | ".join(
            f"**{cell(s, a, ka) / cell(s, b, kb):.2f}x**" for s in sizes) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small size only, no docs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = SIZES[:1] if args.quick else SIZES
    text = table(sizes, rounds=2 if args.quick else 5)
    print(text)
    if args.quick:
        return
    write_section("second_order", "\n".join([
        "## Second derivatives (benchmarks/second_order.py)",
        "",
        f"Machine: {machine('1 thread')}. Best of 5 loops, the peers taking turns; "
        f"{load_note('end')}. A gradient-penalty step: the loss's input gradient with "
        "`create_graph=True`, then `backward` of the loss plus its squared norm.",
        "",
        text,
        "",
        "A fused backward asked for a graph recomputes the scan by the reference's ops "
        "(lstmkit/kernels/second_order.py), so a penalty step on the cpu backend costs the "
        "fused forward plus a reference forward and a double backward: a little more than "
        "the reference backend's own penalty step (the second ratio row), and more than "
        "torch.nn.LSTM's, whose CPU ops torch differentiates twice itself (the third; for "
        "the configurations torch computes, backend=\"auto\" runs those). A plain training "
        "step is unchanged.",
    ]))


if __name__ == "__main__":
    main()
