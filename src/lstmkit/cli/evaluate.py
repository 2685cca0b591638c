"""``lstmkit evaluate``: a checkpoint's test metrics, against the baselines, without training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lstmkit.cli._apps import add_config_parser, app_config, config_from, load_checkpoint


@dataclass(frozen=True)
class EvaluateConfig:
    """A checkpoint and the data to evaluate it on."""

    checkpoint: str | None = None
    """A checkpoint file or run folder."""
    data: str | None = None
    """A CSV or Parquet file (forecast; None: the data the model was trained on)."""
    dataset: str | None = None
    """A bundled dataset (None: the one the model was trained on)."""
    text: str | None = None
    """A UTF-8 text file (charlm; None: the model's corpus)."""
    output: str | None = None
    """Also write the metrics as JSON here."""


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "evaluate", EvaluateConfig,
                      "evaluate a checkpoint on held-out data, next to the baselines", run)


def run(args) -> int:
    from lstmkit.apps import charlm, forecast
    from lstmkit.apps.outputs import write_json

    config = config_from(args)
    model, module = load_checkpoint(config.checkpoint)
    report = module.evaluate(model, app_config(model, module, data=config.data,
                                               dataset=config.dataset, text=config.text))
    if module is charlm:
        print(f"held-out bits per character: {report['test_bits_per_char']:.3f}")
    else:
        print(module.format_table(report))
    if config.output is not None:
        write_json(Path(config.output), forecast.public(report))
        print(f"metrics: {config.output}")
    return 0
