"""What ``--precision bf16`` and ``fp16`` cost in accuracy and save in time on forecast, classify
and charlm: each run four times side by side, one thread, short settings: fp32 on the default
backend ("auto": torch's own for these plain LSTMs), fp32 on the cpu backend, and bf16 and fp16
on the default backend (in 16 bits "auto" takes the cpu backend), so that the gain of the
backend and that of the precision can be told apart.

    PYTHONPATH=src python benchmarks/precision.py            # all three apps, about 20 minutes
    PYTHONPATH=src python benchmarks/precision.py charlm     # one of them
    PYTHONPATH=src python benchmarks/precision.py layers     # one LSTM layer, native and cpu

Prints the table of docs/applications.md ("16-bit training") with the CPU's name and the load
average; seconds are the trainer's (training and validation), the ratio is to the fp32 run of the
same row. The metrics are those of the float32 master weights after training, as each app
reports them. Raw results stay in runs/precision/<app>-<precision>-<backend>/metrics.json.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import torch

import lstmkit
from lstmkit.apps import charlm, classify, forecast
from lstmkit.apps.model_options import ModelOptions

RUNS = (("fp32", "auto"), ("fp32", "cpu"), ("bf16", "auto"), ("fp16", "auto"))
"""(precision, model.backend) of each run."""


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def layers() -> None:
    """One training step (forward and backward) of an LSTM layer at charlm's size (T=100, B=32,
    I=32, H=256) on the native and cpu backends in each dtype, the mean of 3 after one warm-up."""
    print("| backend | dtype | seconds per step |\n|---|---|---|")
    for backend in ("native", "cpu"):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            torch.manual_seed(0)
            layer = lstmkit.LSTM(32, 256, backend=backend).to(dtype)
            x = torch.randn(100, 32, 32).to(dtype)
            times = []
            for _ in range(4):
                started = time.perf_counter()
                layer(x)[0].float().sum().backward()
                times.append(time.perf_counter() - started)
            print(f"| {backend} | {str(dtype).replace('torch.', '')} | "
                  f"{sum(times[1:]) / 3:.3f} |", flush=True)


APPS = {
    "forecast": ("forecast airline (defaults: LSTM 64, at most 40 epochs)", _forecast),
    "classify": ("classify BasicMotions (defaults: BiLSTM 64, up to 150 epochs)", _classify),
    "charlm": ("charlm KJV (LSTM 256, 2 epochs of 100 steps)", _charlm),
}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"CPU: {_cpu()}; torch {torch.__version__}; load average at start "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
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
            print(f"| {title} | {precision} | {backend} | {result} | {seconds:.0f} | "
                  f"{seconds / base:.2f} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
