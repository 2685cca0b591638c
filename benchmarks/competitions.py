"""The global forecaster on a competition, beside statsforecast, as the tables of
docs/applications.md print it.

    PYTHONPATH=src python benchmarks/competitions.py m3 --seeds 3 --patience 10 \
        --baseline-jobs 2 --baseline-budget 1500
    PYTHONPATH=src python benchmarks/competitions.py tourism --seeds 3 --patience 10 \
        --baseline-jobs 2 --baseline-budget 1500

Each run is exactly ``lstmkit forecast --dataset NAME --out runs/bench/competition-NAME`` with
the options given after the name (any ``ForecastConfig`` field); the raw metrics stay in that
run's metrics.json. The machine's name and its load average are printed with the table: the
seconds are wall-clock times and move with the load, the scores do not.
"""

from __future__ import annotations

import os
import sys
import time

from _report import machine

from lstmkit.apps import global_runs
from lstmkit.apps.forecast import ForecastConfig
from lstmkit.cli.options import build_config


def markdown(rows: dict, seeds: int) -> list[str]:
    spread = f" (mean ± sd over {seeds} seeds)" if seeds > 1 else ""
    lines = [f"| method | sMAPE %{spread} | MASE{spread} | 80% coverage | seconds |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        smape = f"{row['smape']:.2f}" + (f" ± {row['smape_sd']:.2f}" if "smape_sd" in row
                                          and seeds > 1 else "")
        mase = f"{row['mase']:.3f}" + (f" ± {row['mase_sd']:.3f}" if "mase_sd" in row
                                        and seeds > 1 else "")
        cover = f"{row['coverage']:.2f}" if "coverage" in row else "-"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        lines.append(f"| {name} | {smape} | {mase} | {cover} | {seconds} |")
    return lines


def main(argv: list[str]) -> None:
    import argparse

    from lstmkit.cli.options import add_options

    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    add_options(parser, ForecastConfig)
    args = parser.parse_args(argv)
    if args.progress is None:
        args.progress = False  # a bar redrawn into a log is noise; --progress true still works
    config = build_config(ForecastConfig, args, dataset=args.name,
                          out=f"runs/bench/competition-{args.name}")
    load = os.getloadavg()
    started = time.perf_counter()
    report = global_runs.train(config)
    print(f"# {machine(f'load average {load[0]:.1f} at the start')}, "
          f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all")
    for part in report["parts"]:
        print(f"\n{part['name']}: {part['series']} series, horizon {part['horizon']}, "
              f"epochs {part['epochs']} (best {part['best_epochs']})")
        print("\n".join(markdown(part["rows"], config.seeds)))
        for note in dict.fromkeys(part["notes"]):
            print(f"note: {note}")
    if "overall" in report:
        print("\noverall")
        print("\n".join(markdown(report["overall"], 1)))


if __name__ == "__main__":
    main(sys.argv[1:])
