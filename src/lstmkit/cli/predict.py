"""``lstmkit predict``: what a trained model says about data, from its checkpoint alone.

A forecaster forecasts after the end of the series; a classifier gives the labels and class
probabilities of new sequences (or of its test split); a character model writes a sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lstmkit.cli._apps import add_config_parser, app_config, config_from, load_checkpoint


@dataclass(frozen=True)
class PredictConfig:
    """A checkpoint and the data to predict on."""

    checkpoint: str | None = None
    """A checkpoint file or run folder."""
    data: str | None = None
    """forecast: a CSV or Parquet series; classify: sequences, labelled or not, laid out as
    for training (None: the data the model was trained on)."""
    dataset: str | None = None
    """A bundled dataset (None: the one the model was trained on)."""
    output: str | None = None
    """Write the predictions here: .json for JSON records, else CSV (None: print them)."""


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "predict", PredictConfig,
                      "predict with a checkpoint: forecasts ahead, labels and probabilities, "
                      "or sampled text", run)


def run(args) -> int:
    from lstmkit.apps.outputs import write_table
    from lstmkit.io import write_text

    config = config_from(args)
    model, app = load_checkpoint(config.checkpoint)
    given = {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "output")}
    result = app.predict(model, app_config(model, app, **given))
    if config.output is None:
        print(result if isinstance(result, str) else result.to_string(index=False))
        return 0
    if isinstance(result, str):
        write_text(config.output, result)
    else:
        write_table(config.output, result)
    print(f"predictions: {config.output}")
    return 0
