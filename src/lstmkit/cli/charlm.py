"""``lstmkit charlm``: train a character language model with truncated BPTT."""

from __future__ import annotations

from lstmkit.apps import charlm
from lstmkit.cli._apps import add_config_parser, config_from, print_report


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "charlm", charlm.CharLMConfig,
                      "train a character language model (state carried across batches, "
                      "truncated BPTT); report held-out bits per character", run)


def run(args) -> int:
    report = charlm.train(config_from(args))
    if report:
        print_report(charlm, report)
    return 0
