"""A fit/predict estimator on long-format pandas DataFrames, for notebooks.

One row per series and time: an id column, a time column, the target and any covariates::

    from lstmkit.apps.estimator import GlobalForecaster
    model = GlobalForecaster(horizon=12, future=("price",)).fit(history)
    forecasts = model.predict(history_with_future_prices)  # id, time, step, q0.1, q0.5, q0.9
    model = GlobalForecaster.load("runs/forecast")          # a run folder of the CLI as well

It trains the same global network as ``lstmkit forecast --data FILE --id-column ID`` (see
``lstmkit.apps.global_forecast``): the last ``horizon`` points of each series validate and
calibrate the intervals.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from lstmkit import checkpoint
from lstmkit.apps import global_forecast as gf
from lstmkit.apps import global_runs
from lstmkit.apps.trainer import MODEL_FILE
from lstmkit.tasks import panel as panel_data
from lstmkit.tasks.series import split_names


class GlobalForecaster:
    """One network across every series of a long-format DataFrame.

    Args:
        horizon: steps to forecast.
        id_column, time_column, target: the columns' names.
        static, past, future: covariate columns by role (see ``lstmkit.tasks.panel``).
        season: seasonal period (None: the frequency's).
        freq: pandas frequency of the time grid (None: inferred; needed for irregular dates).
        out: folder for the checkpoint (None: a temporary one).
        **options: any field of :class:`lstmkit.apps.forecast.ForecastConfig` (epochs,
            context, quantiles, seed, lr, base, ``model=ModelOptions(...)``, ...).
    """

    def __init__(self, horizon: int, id_column: str = "id", time_column: str = "time",
                 target: str = "y", static=(), past=(), future=(), season: int | None = None,
                 freq: str | None = None, out: str | None = None, **options):
        from lstmkit.apps.forecast import ForecastConfig

        self.columns = {"id_column": id_column, "time_column": time_column, "target": target,
                        "static": tuple(static), "past": tuple(past), "future": tuple(future)}
        out = out or tempfile.mkdtemp(prefix="lstmkit-forecast-")
        self.config = ForecastConfig(horizon=horizon, season=season, freq=freq, out=out,
                                     progress=options.pop("progress", False), **options)
        self.model = None

    def _panel(self, frame):
        c = self.columns
        return panel_data.from_frame(frame, c["id_column"], c["time_column"], c["target"],
                                     c["static"], c["past"], c["future"],
                                     season=self.config.season, horizon=self.config.horizon,
                                     missing=self.config.missing, freq=self.config.freq,
                                     time_format=self.config.time_format)

    def fit(self, frame) -> GlobalForecaster:
        """Train on every series of ``frame``; returns self."""
        self.model, self.history = gf.fit_panel(self._panel(frame), self.config, 0,
                                                self.config.seed, Path(self.config.out))
        self.model.meta["columns"] = {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in self.columns.items()}
        checkpoint.save(Path(self.config.out) / MODEL_FILE, self.model, **self.model.meta)
        return self

    def predict(self, frame):
        """Forecasts after the end of each series of ``frame`` (the history, plus for future
        covariates the horizon's rows with an empty target): a long DataFrame."""
        if self.model is None:
            raise ValueError("predict: expected a fitted forecaster (call fit first), got none")
        return global_runs.ahead_table(self.model, self._panel(frame))

    @classmethod
    def load(cls, path) -> GlobalForecaster:
        """A forecaster from a checkpoint file or run folder written by ``fit`` or the CLI."""
        model = checkpoint.load(path)
        if model.meta.get("kind") != "global":
            raise ValueError(f"checkpoint: expected a global forecaster, got "
                             f"{model.meta.get('app')!r} ({model.meta.get('kind', 'one series')})"
                             f" in {path}")
        config = model.meta["config"]
        stored = model.meta.get("columns") or {
            "id_column": config["id_column"] or "id", "time_column": config["time_column"]
            or "time", "target": config["target"] or "y",
            "static": split_names(config["static_covariates"]),
            "past": split_names(config["past_covariates"]),
            "future": split_names(config["future_covariates"])}
        self = cls.__new__(cls)
        self.columns = {**stored, **{k: tuple(stored[k]) for k in ("static", "past", "future")}}
        from lstmkit.apps.forecast import ForecastConfig

        names = {f.name for f in dataclasses.fields(ForecastConfig)}
        self.config = ForecastConfig(**{k: v for k, v in config.items() if k in names})
        self.model = model
        return self
