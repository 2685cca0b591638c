"""``lstmkit forecast``: train a forecaster, backtest it against baselines, forecast ahead.

One series (a bundled dataset or a wide file): one network. A competition (``--dataset
m3-monthly``, ``tourism``, ...) or a long-format file (``--data FILE --id-column ID``): one global
network across every series, beside statsforecast's baselines fitted in the same run.
"""

from __future__ import annotations

from lstmkit.apps import forecast
from lstmkit.cli._apps import add_config_parser, config_from, print_report


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "forecast", forecast.ForecastConfig,
                      "train an LSTM forecaster on a series (backtested against naive, "
                      "seasonal naive and ETS), or one global model across a competition's "
                      "series or a long-format file's (against statsforecast's AutoETS, "
                      "AutoTheta, AutoARIMA); write checkpoint, metrics and forecasts", run)


def run(args) -> int:
    report = forecast.train(config_from(args))
    if report:  # empty on the processes other than rank 0 under torchrun
        print_report(forecast, report)
    return 0
