"""What ``--precision bf16`` and ``fp16`` cost in accuracy and save in time on forecast, classify
and charlm: each run four times side by side, one thread, short settings: fp32 on the default
backend ("auto": torch's own for these plain LSTMs), fp32 on the cpu backend, and bf16 and fp16
on the default backend (in 16 bits "auto" takes the cpu backend), so that the gain of the
backend and that of the precision can be told apart.

    PYTHONPATH=src python benchmarks/precision.py            # all three apps, about 20 minutes
    PYTHONPATH=src python benchmarks/precision.py charlm     # one of them
    PYTHONPATH=src python benchmarks/precision.py layers     # one LSTM layer per backend, dtype

Prints the table of docs/applications.md ("16-bit training") with the CPU's name and the load
average; seconds are the trainer's (training and validation), the ratio is to the fp32 run of the
same row. The metrics are those of the float32 master weights after training, as each app
reports them. Raw results stay in runs/precision/<app>-<precision>-<backend>/metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

import _report
import torch

import lstmkit
from lstmkit.apps import charlm, classify, forecast
from lstmkit.apps.model_options import ModelOptions
from lstmkit.kernels import cpu

RUNS = (("fp32", "auto"), ("fp32", "cpu"), ("bf16", "auto"), ("fp16", "auto"))
"""(precision, model.backend) of each run."""


def _backend(config, backend: str):
    return dataclasses.replace(config, model=dataclasses.replace(config.model, backend=backend))


def _forecast(precision: str, backend: str) -> tuple[str, float]:
    config = forecast.ForecastConfig(dataset="airline", precision=precision, progress=False,
                                     out=f"runs/precision/forecast-{precision}-{backend}")
    report = forecast.train(_backend(config, backend))
    mase = next(iter(report["metrics"].values()))["lstm"]["mase"]
    return f"MASE {mase:.3f}", report["training"]["seconds"]


def _classify(precision: str, backend: str) -> tuple[str, float]:
    config = classify.ClassifyConfig(dataset="BasicMotions", precision=precision, progress=False,
                                     out=f"runs/precision/classify-{precision}-{backend}")
    report = classify.train(_backend(config, backend))
    return f"accuracy {report['metrics']['lstm']['accuracy']:.3f}", report["training"]["seconds"]


def _charlm(precision: str, backend: str) -> tuple[str, float]:
    config = charlm.CharLMConfig(epochs=2, steps_per_epoch=100, val_chars=20_000,
                                 precision=precision, progress=False,
                                 model=ModelOptions(hidden_size=256, backend=backend),
                                 out=f"runs/precision/charlm-{precision}-{backend}")
    report = charlm.train(config)
    return f"{report['test_bits_per_char']:.3f} bits/char", report["training"]["seconds"]


def _layer_peers() -> dict:
    """(backend, dtype, bfloat16 path) -> (training step, inference forward) of an LSTM layer
    at charlm's size (T=100, B=32, I=32, H=256); the cpu backend's bfloat16 twice where the CPU
    has AVX-512 BF16: its oneDNN product ("dot") and the float32 fallback."""
    paths = ("dot", "fallback") if cpu.bf16_dot_active() else ("fallback",)
    runs = [("native", torch.float32, "-"), ("native", torch.bfloat16, "-"),
            ("native", torch.float16, "-"), ("cpu", torch.float32, "-"),
            *(("cpu", torch.bfloat16, p) for p in paths), ("cpu", torch.float16, "-")]
    peers = {}
    for backend, dtype, path in runs:
        torch.manual_seed(0)
        layer = lstmkit.LSTM(32, 256, backend=backend).to(dtype)
        x = torch.randn(100, 32, 32).to(dtype)

        def train(layer=layer, x=x, path=path):
            with _bf16_path(path):
                layer(x)[0].float().sum().backward()

        def infer(layer=layer, x=x, path=path):
            with _bf16_path(path), torch.no_grad():
                layer(x)

        peers[backend, str(dtype).replace("torch.", ""), path] = (train, infer)
    return peers


@contextlib.contextmanager
def _bf16_path(path: str):
    previous = cpu.use_bf16_dot(path != "fallback")
    try:
        yield
    finally:
        cpu.use_bf16_dot(previous)


def layers() -> None:
    """The table of `_layer_peers`: CPU time in ms of each, the peers taking turns (best of 3
    rounds), and each as a ratio to the cpu backend's float32."""
    peers = _layer_peers()
    times = [_report.best_us({k: fns[mode] for k, fns in peers.items()}, 3, loop_seconds=0.5,
                             warmup=1, least=1, clock=time.process_time) for mode in (0, 1)]
    base = [t["cpu", "float32", "-"] for t in times]
    print(f"bfloat16 products on the cpu backend: "
          f"{'AVX-512 BF16 (oneDNN)' if cpu.bf16_dot_active() else 'the float32 fallback'}\n")
    print("| backend | dtype | bfloat16 path | train ms | infer ms | train vs cpu float32 "
          "| infer vs cpu float32 |\n|---|---|---|---:|---:|---:|---:|")
    for key in peers:
        train, infer = (t[key] for t in times)
        print(f"| {' | '.join(key)} | {train / 1e3:.1f} | {infer / 1e3:.1f} | "
              f"{train / base[0]:.2f} | {infer / base[1]:.2f} |", flush=True)


APPS = {
    "forecast": ("forecast airline (defaults: LSTM 64, at most 40 epochs)", _forecast),
    "classify": ("classify BasicMotions (defaults: BiLSTM 64, up to 150 epochs)", _classify),
    "charlm": ("charlm KJV (LSTM 256, 2 epochs of 100 steps)", _charlm),
}


def main(names: list[str]) -> None:
    if names != ["layers"] and not set(names) <= set(APPS):
        sys.exit(f"precision.py: expected 'layers' or app names from {', '.join(APPS)}, "
                 f"got {' '.join(names)}")
    torch.set_num_threads(1)
    print(f"Machine: {_report.machine()}; {_report.load_note('start')}")
    if names == ["layers"]:
        return layers()
    print("| run | precision | backend | result | seconds | time vs fp32 auto |\n"
          "|---|---|---|---|---|---|")
    for name in names or list(APPS):
        title, run = APPS[name]
        base = None
        for precision, backend in RUNS:
            result, seconds = run(precision, backend)
            base = base or seconds
            print(f"| {title} | {precision} | {backend} | {result} | {seconds:.1f} | "
                  f"{seconds / base:.2f} |", flush=True)
    print(_report.load_note("end"))


if __name__ == "__main__":
    main(sys.argv[1:])
