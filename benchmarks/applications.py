"""Measure the applications on every bundled dataset and print the tables of
docs/applications.md.

    PYTHONPATH=src python benchmarks/applications.py forecast classify   # minutes, one thread
    PYTHONPATH=src python benchmarks/applications.py charlm              # about 10 minutes

Each run is exactly ``lstmkit <app> --dataset NAME --threads 1 --out runs/bench/<app>-NAME``
with the default settings; the raw metrics stay in each run's metrics.json.
"""

from __future__ import annotations

import platform
import sys
import time

import torch

from lstmkit.apps import charlm, classify, forecast
from lstmkit.tasks import sequences, series


def forecast_rows() -> list[str]:
    rows = ["| series | target | LSTM MASE | seasonal naive | naive | mean | ETS | LSTM sMAPE % | "
            "ETS sMAPE % | 80% coverage | seconds |", "|" + "---|" * 11]
    for name in series.DATASETS:
        config = forecast.ForecastConfig(dataset=name, progress=False,
                                         out=f"runs/bench/forecast-{name}")
        report = forecast.train(config)
        for target, table in report["metrics"].items():
            mase = {m: f"{row['mase']:.3f}" for m, row in table.items()}
            rows.append(f"| {name} | {target} | {mase['lstm']} | "
                        f"{mase.get('seasonal_naive', '(= naive)')} | {mase['naive']} | "
                        f"{mase['mean']} | {mase.get('ets', '-')} | "
                        f"{table['lstm']['smape']:.2f} | "
                        f"{table['ets']['smape']:.2f} | {table['lstm']['coverage']:.2f} | "
                        f"{report['training']['seconds']:.0f} |")
        print(rows[-1], flush=True)
    return rows


def classify_rows() -> list[str]:
    rows = ["| dataset | LSTM accuracy | LSTM macro-F1 | 1-NN (summary) | logistic (summary) | "
            "epochs | seconds |", "|" + "---|" * 7]
    for name in sequences.DATASETS:
        config = classify.ClassifyConfig(dataset=name, progress=False,
                                         out=f"runs/bench/classify-{name}")
        report = classify.train(config)
        m = report["metrics"]
        rows.append(f"| {name} | {m['lstm']['accuracy']:.3f} | {m['lstm']['macro_f1']:.3f} | "
                    f"{m['1-NN (summary features)']['accuracy']:.3f} | "
                    f"{m['logistic regression (summary features)']['accuracy']:.3f} | "
                    f"{report['training']['epochs']} | {report['training']['seconds']:.0f} |")
        print(rows[-1], flush=True)
    return rows


def charlm_rows() -> list[str]:
    config = charlm.CharLMConfig(threads=1, progress=False, out="runs/bench/charlm-kjv")
    report = charlm.train(config)
    val = ", ".join(f"{v:.3f}" for v in report["val_bits_per_char"])
    return [f"test bits per character {report['test_bits_per_char']:.3f}; validation after "
            f"each epoch: {val}; {report['training']['seconds']:.0f} s; "
            f"sample: {report['sample']!r}"]


def main(apps: list[str]) -> None:
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    for app in apps or ["forecast", "classify"]:
        print("\n".join({"forecast": forecast_rows, "classify": classify_rows,
                         "charlm": charlm_rows}[app]()))


if __name__ == "__main__":
    main(sys.argv[1:])
