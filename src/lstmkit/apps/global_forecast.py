"""A global forecaster: one network trained across every series of a set.

The network runs along each series and answers, at every step, the quantiles of the next H
values relative to the series' current level (``lstmkit.apps.panel_features`` gives the
equations). Training uses every origin of every series whose labels fall before the held-out
part; the last H points before the backtest validate (early stopping) and calibrate the
intervals (conformal, per horizon step); the backtest origins are then forecast in one pass along
each series, the recurrent state carried forward from origin to origin.

Backtest: ``origins`` origins ``stride`` apart at the end of every series (for a competition,
one origin: its holdout, scored as the competition scored it). Each is set against the
statsforecast baselines fitted on the same history in the same run, timed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from lstmkit import checkpoint
from lstmkit.apps import baselines, metrics
from lstmkit.apps import panel_features as pf
from lstmkit.apps.model_options import model_config
from lstmkit.apps.trainer import MODEL_FILE, fit, session
from lstmkit.apps.windows import conformal_offsets, widen
from lstmkit.models import SequenceModel
from lstmkit.tasks.panel import Panel

CHUNK = 256
"""Series per forward pass when forecasting: bounds memory on long sets."""

MIN_VAL_SERIES = 30
"""Fewest series for early stopping: each gives one validation origin, and on fewer the
validation loss is too noisy to stop on."""


class _PanelTask:
    """Batches of whole series for the trainer; the validation origin of each series."""

    def __init__(self, steps: pf.Steps, val_rows: np.ndarray, spec: pf.Spec, batch_size: int):
        self.steps, self.val_rows, self.spec, self.batch_size = steps, val_rows, spec, batch_size

    def batches(self, epoch, generator):
        s = self.steps
        order = torch.randperm(len(s.x), generator=generator)
        return [(s.x[i], s.y[i], s.known[i], s.lengths[i]) for i in order.split(self.batch_size)]

    def loss(self, model, batch, carry):
        x, y, known, lengths = batch
        end = int(lengths.max())  # the batch's longest series: skip the padding beyond it
        output = model(x[:, :end])[0]
        return pf.masked_pinball(output, y[:, :end], known[:, :end], self.spec), None

    def validate(self, model):
        output = outputs(model, self.steps, int(self.val_rows.max()) + 1)
        rows, series = torch.from_numpy(self.val_rows), torch.arange(len(self.val_rows))
        y = self.steps.y[series, rows][:, None]  # (N, 1, H): one origin per series
        return float(pf.masked_pinball(output[series, rows][:, None], y, torch.ones_like(y),
                                       self.spec))


def outputs(model, steps: pf.Steps, end: int | None = None) -> torch.Tensor:
    """The model's answer at every step of every series: (N, T, H*Q), in chunks of series."""
    device = next(model.parameters()).device
    end = steps.x.shape[1] if end is None else end
    with torch.no_grad():
        parts = [model(x[:, :end].to(device))[0].cpu() for x in steps.x.split(CHUNK)]
    return torch.cat(parts)


def build_model(spec: pf.Spec, config) -> SequenceModel:
    return SequenceModel(model_config(config.model, spec.input_size, spec.output_size))


def default_context(horizon: int, season: int) -> int:
    """Two seasons or two horizons, whichever is longer."""
    return max(2 * season, 2 * horizon, 8)


def fit_panel(panel: Panel, config, drop: int, seed: int, out: Path, part: str | None = None):
    """Train on ``panel`` without its last ``drop`` points; returns (model, history).

    The H points before those validate and calibrate; ``model.meta`` holds the spec and the
    conformal offsets, and the checkpoint in ``out`` is written with them.
    """
    horizon = config.horizon or panel.horizon
    season = config.season or panel.season
    context = config.context or default_context(horizon, season)
    train_part = panel.cut(drop)
    spec = pf.make_spec(train_part, context, horizon, season, config.quantile_list,
                        config.base or "none", config.normalise)
    steps = pf.panel_steps(spec, panel, hold=drop + horizon)
    val_rows = panel.lengths() - drop - horizon - 1
    short = np.flatnonzero(val_rows < 1)
    if len(short):
        raise ValueError(f"series {panel.ids[short[0]]!r} too short: "
                         f"{panel.lengths()[short[0]]} points; a horizon of {horizon} held "
                         f"out for validation and {drop} for the backtest need at least "
                         f"{drop + horizon + 2}")
    training = dataclasses.replace(config, seed=seed, out=str(out))
    notes = []
    if len(panel) < MIN_VAL_SERIES and config.patience:
        training = dataclasses.replace(training, patience=0)
        notes.append(f"early stopping off: {len(panel)} validation windows (one per series), "
                     f"fewer than {MIN_VAL_SERIES}; trained all {config.epochs} epochs")
    meta = {"app": "forecast", "kind": "global", "config": config.to_dict(),
            "spec": spec.to_dict(), "notes": notes, "seed": seed, "part": part, "drop": drop}
    task = _PanelTask(steps, val_rows, spec, config.batch_size)
    with session(training) as runtime:
        model = build_model(spec, config)
        history = fit(model, task, training, meta, runtime)
    model.cpu().eval()
    meta["conformal"] = calibrate(model, steps, val_rows, spec).tolist()
    model.meta = meta
    checkpoint.save(out / MODEL_FILE, model, **meta,
                    training={"epochs": history.epochs, "best_epoch": history.best_epoch})
    return model, history


def fit_and_forecast(panel: Panel, config, origins: list[np.ndarray], seed: int, out: Path,
                     part: str | None = None):
    """Train and forecast at every backtest origin: (forecasts, model, history).

    Without ``config.refit``, one model trained on everything before the first origin
    forecasts every origin in one pass along each series, its recurrent state carried
    forward. With it (an expanding window), one model per origin, trained on everything
    before that origin, forecasts that origin alone; the models of the earlier origins go to
    ``out/origin-K``, the last one (which saw the most data) to ``out``. The returned model and
    history are the last ones.
    """
    first = np.array([rows[0] for rows in origins])
    ends = panel.lengths()
    if not config.refit or len(origins[0]) == 1:
        model, history = fit_panel(panel, config, int((ends - first).min()), seed, out, part)
        return forecast_at(model, panel, origins), model, history
    count, found = len(origins[0]), []
    for k in range(count):
        drop = int((ends - np.array([rows[k] for rows in origins])).min())
        where = out if k == count - 1 else out / f"origin-{k}"
        model, history = fit_panel(panel, config, drop, seed, where, part)
        found.append(forecast_at(model, panel, [rows[k:k + 1] for rows in origins]))
    return [np.concatenate([f[i] for f in found]) for i in range(len(panel))], model, history


def calibrate(model, steps: pf.Steps, rows: np.ndarray, spec: pf.Spec) -> np.ndarray:
    """Conformal offsets (H, 1, Q//2) from each series' validation origin."""
    series = np.arange(len(rows))
    q = pf.at_origins(outputs(model, steps, int(rows.max()) + 1), steps, series, rows, spec)
    actual = steps.y[series, rows].numpy().astype(float) + steps.base[series, rows]
    return conformal_offsets(q[:, :, None], actual[:, :, None], spec.quantiles)


def spec_of(model) -> pf.Spec:
    return pf.Spec.from_dict(model.meta["spec"])


def forecast_at(model, panel: Panel, origins: list[np.ndarray], steps: pf.Steps | None = None
                ) -> list[np.ndarray]:
    """Quantile forecasts in data units at each series' origins (row indices: the forecast
    starts at that row): one array (len(origins[i]), H, Q) per series, from one pass."""
    spec = spec_of(model)
    steps = steps or pf.panel_steps(spec, panel)
    output = outputs(model, steps)
    offsets = np.asarray(model.meta["conformal"], float)
    result = []
    for i, rows in enumerate(origins):
        series = np.full(len(rows), i)
        q = pf.at_origins(output, steps, series, np.asarray(rows) - 1, spec)  # (S, H, Q)
        q = widen(q[:, :, None], offsets)[:, :, 0]
        scale = steps.scale[i, np.asarray(rows) - 1][:, :, None]  # (S, H, 1)
        result.append(pf.denormalise(q, scale, spec.transform))
    return result


def ahead(model, panel: Panel) -> list[np.ndarray] | None:
    """Forecasts after the end of every series (H, Q) each, or None when the model reads
    future covariates and some series lacks their values over the horizon."""
    spec = spec_of(model)
    if spec.future:
        need = panel.lengths() + spec.horizon
        if any(len(f) < n for f, n in zip(panel.future, need)):
            return None
    ends = [np.array([n]) for n in panel.lengths()]
    return [f[0] for f in forecast_at(model, panel, ends)]


def backtest_origins(panel: Panel, horizon: int, count: int, stride: int) -> list[np.ndarray]:
    """Per series, ``count`` origins ``stride`` apart, the last ``horizon`` before its end."""
    return [n - horizon - stride * np.arange(count)[::-1] for n in panel.lengths()]


def score(forecasts: list[np.ndarray], panel: Panel, origins, horizon: int, season: int
          ) -> dict:
    """sMAPE (%) and MASE averaged over series and origins, as the M competitions did: the
    mean over the horizon of each forecast, then the mean over forecasts."""
    smapes, mases = [], []
    for y, f, rows in zip(panel.values, forecasts, origins):
        for point, o in zip(f, rows):
            actual = y[o:o + horizon]
            smapes.append(metrics.smape(actual, point))
            mases.append(metrics.mase(actual, point, y[:o], season))
    return {"smape": float(np.mean(smapes)), "mase": float(np.mean(mases)),
            "per_series_smape": smapes, "per_series_mase": mases}


def coverage(forecasts: list[np.ndarray], panel: Panel, origins, horizon: int) -> float:
    inside = [metrics.coverage(y[o:o + horizon], f[s, :, 0], f[s, :, -1])
              for y, f, rows in zip(panel.values, forecasts, origins)
              for s, o in enumerate(rows)]
    return float(np.mean(inside))


def run_baselines(names, panel: Panel, origins, horizon: int, season: int, jobs: int = 1,
                  budget: float | None = None):
    """(name, forecasts, seconds, unfinished) of each statsforecast method at the same
    origins, one method at a time, each on ``jobs`` processes within ``budget`` seconds (the
    seconds count from when the processes are ready).

    ``forecasts`` is None when some fit did not finish in the budget; ``unfinished`` counts
    those series (0 when it finished)."""
    histories = [y[:o] for y, rows in zip(panel.values, origins) for o in rows]
    for name, model in baselines.statsforecast_methods(names, season).items():
        if jobs > 1:
            baselines._pool(jobs)  # started before the clock
        started = time.perf_counter()
        found = baselines.statsforecast_many(model, histories, horizon, jobs, budget)
        seconds = time.perf_counter() - started
        unfinished = sum(f is None for f in found)
        forecasts, at = [], 0
        for rows in origins:
            forecasts.append(None if unfinished else np.stack(found[at:at + len(rows)]))
            at += len(rows)
        yield name, None if unfinished else forecasts, seconds, unfinished
