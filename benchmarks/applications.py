"""Measure the applications on every bundled dataset and print the tables of
docs/applications.md.

    PYTHONPATH=src python benchmarks/applications.py forecast classify   # minutes, one thread
    PYTHONPATH=src python benchmarks/applications.py forecast --seeds 3  # mean ± sd of seeds
    PYTHONPATH=src python benchmarks/applications.py charlm              # about 10 minutes

Each run is exactly ``lstmkit <app> --dataset NAME --threads 1 --out runs/bench/<app>-NAME``
with the default settings; the raw metrics stay in each run's metrics.json.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _report import machine

from lstmkit.apps import charlm, classify, forecast
from lstmkit.tasks import sequences, series


def forecast_rows(seeds: int = 1) -> list[str]:
    """One row per series and target: the LSTM's mean ± sd over ``seeds`` seeds (0, 1, ...)
    beside the baselines, which do not depend on the seed."""
    spread = f" (mean ± sd, {seeds} seeds)" if seeds > 1 else ""
    rows = [f"| series | target | LSTM MASE{spread} | seasonal naive | naive | mean | ETS | "
            f"LSTM sMAPE %{spread} | ETS sMAPE % | 80% coverage | seconds per seed |",
            "|" + "---|" * 11]
    for name in series.DATASETS:
        reports = [forecast.train(forecast.ForecastConfig(
            dataset=name, progress=False, seed=seed,
            out=f"runs/bench/forecast-{name}" + (f"-seed{seed}" if seed else "")))
            for seed in range(seeds)]
        seconds = np.mean([r["training"]["seconds"] for r in reports])
        for target, table in reports[0]["metrics"].items():
            lstm = {k: np.array([r["metrics"][target]["lstm"][k] for r in reports])
                    for k in ("mase", "smape", "coverage")}
            mase = {m: f"{row['mase']:.3f}" for m, row in table.items()}
            rows.append(f"| {name} | {target} | {_spread(lstm['mase'], 3)} | "
                        f"{mase.get('seasonal_naive', '(= naive)')} | {mase['naive']} | "
                        f"{mase['mean']} | {mase.get('ets', '-')} | "
                        f"{_spread(lstm['smape'], 2)} | {table['ets']['smape']:.2f} | "
                        f"{lstm['coverage'].mean():.2f} | {seconds:.0f} |")
            print(rows[-1], flush=True)
    return rows


def _spread(values: np.ndarray, digits: int) -> str:
    """``mean ± sd`` (sample sd) of several seeds, the value alone for one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


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


def main(argv: list[str]) -> None:
    import argparse
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", nargs="*", choices=["forecast", "classify", "charlm"])
    parser.add_argument("--seeds", type=int, default=1,
                        help="forecast: train each series with seeds 0..N-1 (default 1)")
    args = parser.parse_args(argv)
    print(f"# {machine(f'load average {os.getloadavg()[0]:.1f} at the start')}, "
          f"{time.strftime('%Y-%m-%d')}")
    tables = {"forecast": lambda: forecast_rows(args.seeds), "classify": classify_rows,
              "charlm": charlm_rows}
    for app in args.apps or ["forecast", "classify"]:
        print("\n".join(tables[app]()))


if __name__ == "__main__":
    main(sys.argv[1:])
