"""``lstmkit demo``: from a bundled real series to a trained, backtested forecaster."""

from __future__ import annotations

from lstmkit.apps import forecast
from lstmkit.cli._apps import print_report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train a forecaster on the airline series and compare it with baselines")
    parser.add_argument("--dataset", default="airline",
                        help="bundled series (default: airline)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Train on all but the last 3 years, backtest those years, print the table."""
    config = forecast.ForecastConfig(dataset=args.dataset, out=args.out)
    print(f"lstmkit demo: an LSTM forecaster on the bundled {config.dataset!r} series, "
          f"backtested against naive, seasonal naive and ETS forecasts")
    print_report(forecast, forecast.train(config))
    return 0
