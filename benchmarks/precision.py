"""What ``--precision bf16`` and ``fp16`` cost in accuracy and save in time on forecast, classify
and charlm: each run three times side by side (fp32, bf16, fp16), one thread, short settings.

    PYTHONPATH=src python benchmarks/precision.py            # all three apps, about 15 minutes
    PYTHONPATH=src python benchmarks/precision.py charlm     # one of them

Prints the table of docs/applications.md ("16-bit training") with the CPU's name and the load
average; seconds are the trainer's (training and validation), the ratio is to the fp32 run of the
same row. The metrics are those of the float32 master weights after training, as each app
reports them. Raw results stay in runs/precision/<app>-<precision>/metrics.json.
"""

from __future__ import annotations

import os
import platform
import sys

import torch

from lstmkit.apps import charlm, classify, forecast
from lstmkit.apps.model_options import ModelOptions

PRECISIONS = ("fp32", "bf16", "fp16")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _forecast(precision: str) -> tuple[str, float]:
    config = forecast.ForecastConfig(dataset="airline", precision=precision, progress=False,
                                     out=f"runs/precision/forecast-{precision}")
    report = forecast.train(config)
    mase = next(iter(report["metrics"].values()))["lstm"]["mase"]
    return f"MASE {mase:.3f}", report["training"]["seconds"]


def _classify(precision: str) -> tuple[str, float]:
    config = classify.ClassifyConfig(dataset="BasicMotions", precision=precision, progress=False,
                                     out=f"runs/precision/classify-{precision}")
    report = classify.train(config)
    return f"accuracy {report['metrics']['lstm']['accuracy']:.3f}", report["training"]["seconds"]


def _charlm(precision: str) -> tuple[str, float]:
    config = charlm.CharLMConfig(epochs=2, steps_per_epoch=100, val_chars=20_000,
                                 precision=precision, progress=False,
                                 model=ModelOptions(hidden_size=256),
                                 out=f"runs/precision/charlm-{precision}")
    report = charlm.train(config)
    return f"{report['test_bits_per_char']:.3f} bits/char", report["training"]["seconds"]


APPS = {
    "forecast": ("forecast airline (defaults: LSTM 64, up to 300 epochs)", _forecast),
    "classify": ("classify BasicMotions (defaults: BiLSTM 64, up to 150 epochs)", _classify),
    "charlm": ("charlm KJV (LSTM 256, 2 epochs of 100 steps)", _charlm),
}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"CPU: {_cpu()}; torch {torch.__version__}; load average at start "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| run | precision | result | seconds | time vs fp32 |\n|---|---|---|---|---|")
    for name in names or list(APPS):
        title, run = APPS[name]
        base = None
        for precision in PRECISIONS:
            result, seconds = run(precision)
            base = base or seconds
            print(f"| {title} | {precision} | {result} | {seconds:.0f} | {seconds / base:.2f} |",
                  flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
