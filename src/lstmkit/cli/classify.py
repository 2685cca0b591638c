"""``lstmkit classify``: train a sequence classifier and test it against simple baselines."""

from __future__ import annotations

from lstmkit.apps import classify
from lstmkit.cli._apps import add_config_parser, config_from, print_report


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "classify", classify.ClassifyConfig,
                      "train an LSTM sequence classifier (variable lengths, bidirectional, "
                      "pooled); report accuracy and macro-F1 against 1-NN and logistic "
                      "regression", run)


def run(args) -> int:
    report = classify.train(config_from(args))
    if report:
        print_report(classify, report)
    return 0
