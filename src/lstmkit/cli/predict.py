"""``lstmkit predict``: what a trained model says about data, from its checkpoint alone.

A forecaster forecasts after the end of the series; a classifier labels the test split; a
character model writes a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstmkit.cli._apps import add_config_parser, app_config, config_from, load_checkpoint


@dataclass(frozen=True)
class PredictConfig:
    """A checkpoint and the data to predict on."""

    checkpoint: str | None = None
    """A checkpoint file or run folder."""
    data: str | None = None
    """A CSV or Parquet file (forecast; None: the data the model was trained on)."""
    dataset: str | None = None
    """A bundled dataset (None: the one the model was trained on)."""
    output: str | None = None
    """Write the predictions as CSV here (None: print them)."""


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "predict", PredictConfig,
                      "predict with a checkpoint: forecasts ahead, labels, or sampled text", run)


def run(args) -> int:
    from lstmkit.apps import charlm
    from lstmkit.apps.outputs import write_csv

    config = config_from(args)
    model, module = load_checkpoint(config.checkpoint)
    if module is charlm:
        print(charlm.sample(model, "And ", 300, temperature=0.8, top_k=10))
        return 0
    table = module.predict(model, app_config(model, module, data=config.data,
                                             dataset=config.dataset))
    if config.output is None:
        print(table.to_string(index=False))
    else:
        write_csv(config.output, table)
        print(f"predictions: {config.output}")
    return 0
