"""``lstmkit evaluate``: a checkpoint's test metrics, against the baselines, without training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from lstmkit.cli._apps import add_config_parser, app_config, config_from, load_checkpoint


@dataclass(frozen=True)
class EvaluateConfig:
    """A checkpoint and the data to evaluate it on."""

    checkpoint: str | None = None
    """A checkpoint file or run folder."""
    data: str | None = None
    """forecast: a CSV or Parquet series; classify: labelled sequences, all of them scored
    (None: the model's own test data)."""
    test_data: str | None = None
    """classify: labelled test sequences (as --data)."""
    dataset: str | None = None
    """A bundled dataset (None: the one the model was trained on)."""
    text: str | None = None
    """charlm: a UTF-8 text file, scored whole (None: the held-out end of the model's corpus)."""
    output: str | None = None
    """Also write the metrics as JSON here."""


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "evaluate", EvaluateConfig,
                      "evaluate a checkpoint on held-out data, next to the baselines", run)


def run(args) -> int:
    from lstmkit.apps.outputs import write_json

    config = config_from(args)
    model, app = load_checkpoint(config.checkpoint)
    given = {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "output")}
    report = app.evaluate(model, app_config(model, app, **given))
    print(app.report(report))
    if config.output is not None:
        write_json(Path(config.output), app.public(report))
        print(f"metrics: {config.output}")
    return 0
