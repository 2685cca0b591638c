"""``lstmkit forecast``: train a forecaster, backtest it against baselines, forecast ahead."""

from __future__ import annotations

from lstmkit.apps import forecast
from lstmkit.cli._apps import add_config_parser, config_from, print_report


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "forecast", forecast.ForecastConfig,
                      "train an LSTM forecaster on a series; backtest it against naive, "
                      "seasonal naive and ETS; write checkpoint, metrics, forecasts and plot", run)


def run(args) -> int:
    report = forecast.train(config_from(args))
    if report:  # empty on the processes other than rank 0 under torchrun
        print_report(forecast, report)
    return 0
