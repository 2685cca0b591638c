"""Forecasting: train an LSTM on a series, backtest it against baselines, forecast ahead.

The model reads a window of the last ``context`` steps and answers, from its last step, the
quantiles of every target at each of the next ``horizon`` steps (direct multi-horizon, pinball
loss). Data statistics are fitted on the training rows only, and every number reported or written
is in the data's own units.

Early stopping (``patience``) is on however few the validation windows are (the latest
``val_fraction`` of the training windows), and with fewer than ``FEW_VAL_WINDOWS`` of them the
run is also capped at ``patience`` epochs. The trainer keeps the epoch with the best validation
loss, and on a dozen windows that loss is noisy: the more epochs it compares, the more surely it
picks one that fits the noise. Early stopping off (all 300 compared) picked overfit ones on
airline (MASE 1.204, 80% coverage 0.14); early stopping alone still ran one seed of four to epoch
158 (MASE 1.60); one patience of epochs compares few enough candidates. The same windows
calibrate the intervals (conformal, see ``lstmkit.apps.windows``).

Backtest: rolling origin without refitting. The model is trained on the rows before the first
origin; then, at each of ``origins`` origins ``stride`` apart, every method forecasts the next
``horizon`` steps from the rows before that origin, and the errors are pooled. With ``refit``
(an expanding window) each origin gets its own model, trained on the rows before it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lstmkit import checkpoint
from lstmkit._optional import require
from lstmkit.apps import baselines, metrics, plots
from lstmkit.apps.model_options import ModelOptions, model_config
from lstmkit.apps.outputs import write_csv, write_json
from lstmkit.apps.trainer import MODEL_FILE, TrainConfig, fit, session
from lstmkit.apps.windows import (
    Layout,
    Scaler,
    conformal_offsets,
    forecast_outputs,
    make_windows,
    pinball_loss,
    to_units,
    window_quantiles,
)
from lstmkit.models import SequenceModel
from lstmkit.tasks import series as series_data

FEW_VAL_WINDOWS = 30
"""Below this many validation windows a run is capped at ``patience`` epochs (see above)."""


@dataclass(frozen=True)
class ForecastConfig(TrainConfig):
    """A forecasting run: data, problem, model and training."""

    dataset: str = "airline"
    """Bundled series: airline, co2, sunspots, nile, elec_equip, macrodata, lynx, uschange (one
    model per series); or a competition: m3, m3-yearly, m3-quarterly, m3-monthly, m3-other,
    tourism, tourism-monthly, tourism-quarterly, tourism-yearly (one global model per
    frequency, scored on the competition's holdout)."""
    data: str | None = None
    """A CSV or Parquet file with a time column; replaces --dataset."""
    id_column: str | None = None
    """With --data: the column naming each series of a long-format file (one row per id and
    time); one global model is then trained across all of them."""
    static_covariates: str = ""
    """With --id-column: comma-separated columns constant within a series (text is one-hot
    encoded)."""
    time_column: str | None = None
    """With --data: the time column (None: the first column)."""
    target: str | None = None
    """With --data: comma-separated columns to forecast (None: all but time and covariates)."""
    past_covariates: str = ""
    """With --data: comma-separated columns known only up to the forecast origin."""
    future_covariates: str = ""
    """With --data: comma-separated columns also known over the horizon."""
    missing: str = "interpolate"
    """Missing values: interpolate (interior gaps, linearly; edges are never filled), drop (the
    rows) or refuse (stop with an error)."""
    horizon: int | None = None
    """Steps to forecast (None: the dataset's usual horizon, 12 for a file)."""
    season: int | None = None
    """Seasonal period for seasonal naive, MASE and the seasonal base (None: the dataset's,
    else the frequency's: 12 monthly, 4 quarterly, 52 weekly, 7 daily, 24 hourly, else 1)."""
    freq: str | None = None
    """With --data: the pandas frequency of the time grid (MS, W, D, ...); needed when dates
    are irregular, whose absent steps then become missing values (None: inferred)."""
    time_format: str | None = None
    """With --data: the strftime format of the dates (e.g. %d/%m/%Y); needed when day and
    month could be swapped (None: ISO dates, or dates readable only one way)."""
    context: int | None = None
    """Steps the model reads (None: the larger of 2 horizons and 2 seasons, at least 8)."""
    quantiles: str = "0.1,0.5,0.9"
    """Comma-separated quantiles to forecast; 0.5 is the point forecast."""
    origins: int = 3
    """Forecast origins of the rolling backtest, at the end of the series."""
    stride: int | None = None
    """Steps between backtest origins (None: the horizon)."""
    refit: bool = False
    """Backtest with an expanding window: retrain at every origin on everything before it
    (origins times the training); otherwise one model, trained before the first origin,
    forecasts them all (the global model in one pass, its state carried forward)."""
    val_fraction: float = 0.15
    """Share of the training windows (the latest) kept for validation and early stopping."""
    window_norm: bool = True
    """Normalise each input window by its own mean and spread (undone on the output)."""
    normalise: str = "level"
    """Global model: divide each window by the series' level, the mean of its last season
    ("level"), or by an exponential-smoothing level and multiplicative season, as ES-RNN does
    ("es", positive targets; lstmkit.apps.smoothing)."""
    base: str | None = None
    """The model forecasts the difference from: none, naive (the last value) or seasonal (the
    last season), a skip connection that starts from that baseline (None: the dataset's
    choice, none for a file)."""
    model: ModelOptions = field(default_factory=ModelOptions)
    """The recurrent stack."""
    epochs: int = 300
    """Passes over the training windows (an upper bound when early stopping)."""
    patience: int = 40
    """Stop after this many epochs without a better validation loss (0: never)."""
    batch_size: int = 16
    """Windows per optimisation step, over all processes together."""
    threads: int = 1
    """Torch CPU threads (0: torch's default); models this small run fastest on one, and do
    not slow to a crawl on a busy machine."""
    out: str = "runs/forecast"
    """Folder for the checkpoint, metrics, forecasts and plot."""
    path_fields: ClassVar[tuple[str, ...]] = ("data",)
    seeds: int = 1
    """Global model: train this many seeds (seed, seed+1, ...); the table shows their mean and
    spread, and the median of their forecasts."""
    baselines: str = "autoets,autotheta,autoarima,seasonal_naive,naive"
    """Global model: comma-separated statsforecast baselines fitted in the same run."""
    limit: int | None = None
    """Global model: keep only the first this many series (quick runs)."""
    baseline_jobs: int = 1
    """Global model: processes fitting the statsforecast baselines (each series alone, so the
    forecasts do not depend on it)."""
    baseline_budget: float | None = None
    """Global model: seconds each baseline may take on a set; one not finished by then is
    reported as unfinished, with how many fits were left, and not scored (None: no limit)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("horizon", "season", "context", "stride", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected None or an int >= 1, got {value!r}")
        if self.origins < 1 or self.seeds < 1 or self.baseline_jobs < 1:
            name = next(n for n in ("origins", "seeds", "baseline_jobs")
                        if getattr(self, n) < 1)
            raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)!r}")
        if self.baseline_budget is not None and not self.baseline_budget > 0:
            raise ValueError(f"baseline_budget: expected None or seconds > 0, got "
                             f"{self.baseline_budget!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction: expected a float in (0, 1), got {self.val_fraction}")
        q = self.quantile_list
        if 0.5 not in q or not all(0 < x < 1 for x in q):
            raise ValueError(f"quantiles: expected values in (0, 1) including 0.5, got "
                             f"{self.quantiles!r}")

    @property
    def quantile_list(self) -> tuple[float, ...]:
        try:
            return tuple(sorted({float(x) for x in self.quantiles.split(",")}))
        except ValueError:
            raise ValueError(f"quantiles: expected comma-separated numbers, got "
                             f"{self.quantiles!r}") from None


def load_series(config: ForecastConfig):
    """The series named by ``config``: a file, else a bundled dataset."""
    split = series_data.split_names
    if config.data is None:
        given = [n for n in ("time_column", "target", "past_covariates", "future_covariates",
                             "freq", "time_format") if getattr(config, n)]
        if given:
            raise ValueError(f"{given[0]}: expected only with --data (the roles of a bundled "
                             f"dataset's columns are fixed), got it with --dataset")
        return series_data.load_dataset(config.dataset, config.missing)
    return series_data.load_file(config.data, config.time_column, split(config.target),
                                 split(config.past_covariates), split(config.future_covariates),
                                 config.missing, season=config.season,
                                 horizon=config.horizon or 12, freq=config.freq,
                                 time_format=config.time_format)


@dataclass(frozen=True)
class Plan:
    """Where the series is cut: training windows, validation windows, backtest origins."""

    layout: Layout
    season: int
    train: np.ndarray
    val: np.ndarray
    backtest: np.ndarray

    @property
    def first_origin(self) -> int:
        return int(self.backtest[0])


def plan(config: ForecastConfig, data) -> Plan:
    """Cut ``data`` as ``config`` says, or explain why it is too short."""
    horizon = config.horizon or data.horizon
    season = config.season or data.season
    context = config.context or max(2 * horizon, 2 * season, 8)
    stride = config.stride or horizon
    n = len(data.frame)
    backtest = n - horizon - stride * np.arange(config.origins)[::-1]
    origins = np.arange(context, backtest[0] - horizon + 1)  # labels end before the backtest
    n_val = max(1, round(config.val_fraction * len(origins)))
    train = origins[:max(len(origins) - n_val - (horizon - 1), 0)]  # a gap: no shared labels
    if len(train) < 2 or backtest[0] <= season:
        need = context + 2 * horizon + horizon - 1 + 1 + stride * (config.origins - 1) + horizon
        raise ValueError(f"series too short: {n} points; a context of {context}, a horizon of "
                         f"{horizon} and {config.origins} backtest origins {stride} apart need "
                         f"at least about {need}; lower --context, --horizon or --origins")
    base = config.base or data.base
    if base == "seasonal" and season == 1:
        raise ValueError("base: expected a season > 1 for 'seasonal', got a season of 1 (give "
                         "--season, or use dates of a calendar frequency)")
    layout = Layout(context, horizon, len(data.targets), len(data.past_covariates),
                    len(data.future_covariates), config.quantile_list, config.window_norm,
                    base, season)
    return Plan(layout, season, train, origins[-n_val:], backtest)


class _Task:
    """Training windows for the trainer: shuffled batches, pinball loss."""

    def __init__(self, train, val, layout: Layout, batch_size: int):
        self.train, self.val, self.layout, self.batch_size = train, val, layout, batch_size

    def batches(self, epoch, generator):
        order = torch.randperm(len(self.train.x), generator=generator)
        return [(self.train.x[i], self.train.y[i]) for i in order.split(self.batch_size)]

    def loss(self, model, batch, carry):
        x, y = batch
        return pinball_loss(forecast_outputs(model, x, self.layout), y, self.layout), None

    def validate(self, model):
        device = next(model.parameters()).device
        output = forecast_outputs(model, self.val.x.to(device), self.layout)
        return float(pinball_loss(output, self.val.y.to(device), self.layout))


def build_model(layout: Layout, config: ForecastConfig) -> SequenceModel:
    pooling = "none" if layout.per_step else "last"
    return SequenceModel(model_config(config.model, layout.input_size, layout.head_size,
                                      pooling=pooling))


def calibrate(model, windows, layout: Layout) -> np.ndarray:
    """Conformal offsets (H, K, Q//2) from held-out ``windows``, in window units."""
    with torch.no_grad():
        q = window_quantiles(forecast_outputs(model, windows.x, layout), windows, layout)
    actual = (windows.y + windows.base).numpy().astype(float)
    return conformal_offsets(q, actual, layout.quantiles)


def train(config: ForecastConfig) -> dict:
    """Train, backtest, forecast ahead; write the checkpoint, metrics, forecasts and plot.

    Returns the metrics (also in ``out/metrics.json``). A competition or a long-format file
    with ids goes to the global forecaster (``lstmkit.apps.global_runs``).
    """
    from lstmkit.apps import global_runs

    if global_runs.is_global(config):
        return global_runs.train(config)
    if config.normalise != "level":
        raise ValueError(f"normalise: expected 'level' for one series (it has --window-norm), "
                         f"got {config.normalise!r}: 'es' is for the global model (a "
                         f"competition or --id-column)")
    data = load_series(config)
    if config.refit and config.origins > 1:
        return _refit(config, data)
    fitted = _fit_series(config, data)
    if fitted is None:
        return {}  # a process other than rank 0 under torchrun
    model, history, cut = fitted
    report = backtest(model, data)
    report["training"] = _training(history, cut)
    _write_outputs(Path(config.out), model, data, report)
    return report


def _training(history, cut: Plan) -> dict:
    return {"seconds": round(history.seconds, 1), "epochs": history.epochs,
            "best_epoch": history.best_epoch + 1, "best_val_pinball": history.best_val,
            "train_windows": len(cut.train), "val_windows": len(cut.val)}


def _refit(config: ForecastConfig, data) -> dict:
    """The expanding-window backtest: at each origin a model trained on the rows before it
    (the earlier ones saved under ``out/origin-K``, the last one in ``out``)."""
    horizon = config.horizon or data.horizon
    stride = config.stride or horizon
    origins = len(data.frame) - horizon - stride * np.arange(config.origins)[::-1]
    found, seconds = [], 0.0
    for k, o in enumerate(origins):
        last = k == len(origins) - 1
        part = data if last else dataclasses.replace(data, frame=data.frame.iloc[:o + horizon],
                                                     ahead=None)
        out = config.out if last else str(Path(config.out) / f"origin-{k}")
        fitted = _fit_series(dataclasses.replace(config, origins=1, out=out), part)
        if fitted is None:
            return {}
        model, history, cut = fitted
        found.append(model_forecast(model, data, np.array([o])))
        seconds += history.seconds
    report = backtest(model, data, origins, lstm=np.concatenate(found))
    report["training"] = {**_training(history, cut), "seconds": round(seconds, 1),
                          "refit": len(origins)}
    report["notes"].append(f"refit: one model per origin ({len(origins)}), each trained on the "
                           f"rows before it")
    _write_outputs(Path(config.out), model, data, report)
    return report


def _fit_series(config: ForecastConfig, data):
    """Train on ``data`` before its backtest: (model, history, plan), None off rank 0."""
    cut = plan(config, data)
    values = data.frame.to_numpy(float)
    scaler = Scaler.fit(values[:cut.first_origin])  # the training rows only
    scaled = scaler.transform(values)
    task = _Task(make_windows(scaled, cut.train, cut.layout),
                 make_windows(scaled, cut.val, cut.layout), cut.layout, config.batch_size)
    meta = _meta(config, data, cut, scaler)
    training = config
    if len(cut.val) < FEW_VAL_WINDOWS and 0 < config.patience < config.epochs:
        training = dataclasses.replace(config, epochs=config.patience)
        meta["notes"] = [f"{len(cut.val)} validation windows, fewer than {FEW_VAL_WINDOWS}: at "
                         f"most {config.patience} epochs (--patience), not {config.epochs}"]
    with session(config) as runtime:
        model = build_model(cut.layout, config)
        history = fit(model, task, training, meta, runtime)
        if not runtime.is_main:
            return None
    model.cpu().eval()
    meta["conformal"] = calibrate(model, task.val, cut.layout).tolist()
    model.meta = meta
    checkpoint.save(Path(config.out) / MODEL_FILE, model, **meta,
                    training={"epochs": history.epochs, "best_epoch": history.best_epoch})
    return model, history, cut


def _meta(config: ForecastConfig, data, cut: Plan, scaler: Scaler) -> dict:
    layout = cut.layout
    return {"app": "forecast", "config": config.to_dict(), "scaler": scaler.to_dict(),
            "layout": {**layout.__dict__, "quantiles": list(layout.quantiles)},
            "season": cut.season, "columns": {"targets": list(data.targets),
                                              "past": list(data.past_covariates),
                                              "future": list(data.future_covariates)},
            "first_origin": cut.first_origin}


def _restore(model) -> tuple[Layout, Scaler]:
    meta = model.meta
    spec = dict(meta["layout"])
    layout = Layout(**{**spec, "quantiles": tuple(spec["quantiles"])})
    return layout, Scaler.from_dict(meta["scaler"])


def _offsets(model) -> np.ndarray | None:
    stored = model.meta.get("conformal")
    return None if stored is None else np.asarray(stored, float)


def _check_columns(model, data) -> None:
    columns = model.meta["columns"]
    expected = tuple(columns["targets"] + columns["past"] + columns["future"])
    if data.columns != expected:
        raise ValueError(f"data: expected the columns {list(expected)} the model was trained "
                         f"on, got {list(data.columns)}")


def model_forecast(model, data, origins: np.ndarray) -> np.ndarray:
    """The model's quantile forecasts at ``origins``, in data units: (S, H, K, Q)."""
    layout, scaler = _restore(model)
    windows = make_windows(scaler.transform(_with_ahead(data, layout)), origins, layout)
    with torch.no_grad():
        output = forecast_outputs(model, windows.x, layout)
        return to_units(output, windows, scaler, layout, _offsets(model))


def _with_ahead(data, layout: Layout) -> np.ndarray:
    """The data's values (N, C), followed, when the model reads future covariates, by the
    horizon's known future covariates (zeros in the other columns, which a window over the
    horizon never reads)."""
    values = data.frame.to_numpy(float)
    if not layout.future or data.ahead is None:
        return values
    ahead = np.zeros((min(len(data.ahead), layout.horizon), values.shape[1]))
    ahead[:, -layout.future:] = data.ahead.to_numpy(float)[:len(ahead)]
    return np.concatenate([values, ahead])


def backtest(model, data, origins: np.ndarray | None = None, lstm: np.ndarray | None = None
             ) -> dict:
    """Metrics of the model and the baselines at the backtest origins, per target; ``lstm``:
    the model's forecasts there when already made (a refit backtest's, one model each)."""
    _check_columns(model, data)
    layout, _ = _restore(model)
    season = model.meta["season"]
    values = data.frame.to_numpy(float)
    if origins is None:
        config = model.meta["config"]
        stride = config["stride"] or layout.horizon
        origins = len(values) - layout.horizon - stride * np.arange(config["origins"])[::-1]
    if origins[0] < layout.context or origins[0] <= season:
        raise ValueError(f"series too short: {len(values)} points for a context of "
                         f"{layout.context} and the backtest origins")
    forecasts = {"lstm": model_forecast(model, data, origins) if lstm is None else lstm}
    for name, method in baselines.FORECASTERS.items():
        if name == "seasonal_naive" and season == 1:
            continue  # the same as naive
        forecasts[name] = _baseline(method, values, origins, layout, season)
    per_target = {target: _score(forecasts, values, origins, layout, season, k)
                  for k, target in enumerate(data.targets)}
    notes = list(data.notes) + list(model.meta.get("notes", []))
    return {"series": data.name, "notes": notes, "horizon": layout.horizon,
            "season": season, "context": layout.context,
            "origins": [str(data.frame.index[o]) for o in origins],
            "train_points": int(model.meta.get("first_origin", origins[0])),
            "interval": [layout.quantiles[0], layout.quantiles[-1]],
            "metrics": per_target, "forecasts": forecasts, "origin_rows": origins.tolist()}


def _baseline(method, values, origins, layout: Layout, season: int) -> np.ndarray | None:
    out = np.zeros((len(origins), layout.horizon, layout.targets, 1))
    for s, o in enumerate(origins):
        for k in range(layout.targets):
            f = method(values[:o, k], layout.horizon, season)
            if f is None:
                return None
            out[s, :, k, 0] = f
    return out


def _score(forecasts, values, origins, layout: Layout, season: int, k: int) -> dict:
    actual = values[origins[:, None] + np.arange(layout.horizon), k]  # (S, H)
    table = {}
    for name, f in forecasts.items():
        if f is None:
            continue
        q = f[:, :, k]  # (S, H, Q)
        point = q[..., q.shape[-1] // 2] if q.shape[-1] > 1 else q[..., 0]
        row = {"mae": metrics.mae(actual, point), "rmse": metrics.rmse(actual, point),
               "smape": metrics.smape(actual, point),
               "mase": float(np.mean([metrics.mase(a, p, values[:o, k], season)
                                      for a, p, o in zip(actual, point, origins)]))}
        if q.shape[-1] > 1:
            row["coverage"] = metrics.coverage(actual, q[..., 0], q[..., -1])
        table[name] = row
    return table


def future(model, data) -> np.ndarray | None:
    """Quantile forecasts after the end of the series (H, K, Q), or None when the model needs
    future covariates over the horizon that the data does not give (rows after the last
    target with the future covariates filled in)."""
    layout, _ = _restore(model)
    if layout.future and (data.ahead is None or len(data.ahead) < layout.horizon):
        return None
    return model_forecast(model, data, np.array([len(data.frame)]))[0]


def future_times(index, horizon: int) -> list:
    """The ``horizon`` times after a time index: its frequency when it has one, else its last
    step repeated."""
    pd = require("pandas", "apps", "forecasting")
    if isinstance(index, pd.DatetimeIndex) and len(index) > 2 and index.inferred_freq:
        return list(pd.date_range(index[-1], periods=horizon + 1, freq=index.inferred_freq)[1:])
    step = index[-1] - index[-2] if len(index) > 1 else 1
    return [index[-1] + step * (h + 1) for h in range(horizon)]


def forecast_table(model, data, report: dict | None):
    """A long DataFrame of backtest and future forecasts: one row per time and target."""
    pd = require("pandas", "apps", "forecasting")
    layout, _ = _restore(model)
    names = [f"q{q:g}" for q in layout.quantiles]
    index, values, rows = data.frame.index, data.frame.to_numpy(float), []
    if report is not None:
        for s, o in enumerate(report["origin_rows"]):
            for h in range(layout.horizon):
                for k, target in enumerate(data.targets):
                    row = {"kind": "backtest", "origin": index[o], "time": index[o + h],
                           "target": target, "step": h + 1, "actual": values[o + h, k]}
                    row.update(zip(names, report["forecasts"]["lstm"][s, h, k]))
                    for name, f in report["forecasts"].items():
                        if name != "lstm" and f is not None:
                            row[name] = f[s, h, k, 0]
                    rows.append(row)
    ahead = future(model, data)
    if ahead is not None:
        times = future_times(index, layout.horizon)
        for h in range(layout.horizon):
            for k, target in enumerate(data.targets):
                row = {"kind": "future", "origin": index[-1], "time": times[h],
                       "target": target, "step": h + 1, "actual": np.nan}
                rows.append({**row, **dict(zip(names, ahead[h, k]))})
    return pd.DataFrame(rows)


def _write_outputs(out: Path, model, data, report: dict) -> None:
    table = forecast_table(model, data, report)
    write_csv(out / "forecast.csv", table)
    write_json(out / "metrics.json", public(report))
    plots.forecast_plot(out / "forecast.png", data, table, report)
    report["files"] = {"checkpoint": str(out / MODEL_FILE), "metrics": str(out / "metrics.json"),
                       "forecasts": str(out / "forecast.csv"), "plot": str(out / "forecast.png")}


def public(report: dict) -> dict:
    """The report without its arrays, ready for JSON."""
    return {k: v for k, v in report.items() if k not in ("forecasts", "origin_rows")}


def format_table(report: dict) -> str:
    """The backtest metrics as aligned text, one block per target."""
    if "parts" in report:
        from lstmkit.apps import global_runs

        return global_runs.format_table(report)
    low, high = report["interval"]
    lines = [f"{report['series']}: {len(report['origins'])} origins x {report['horizon']} steps "
             f"(from {report['origins'][0]}), season {report['season']}, context "
             f"{report['context']}, trained on the first {report['train_points']} points"]
    lines += [f"note: {n}" for n in report["notes"]]
    for target, table in report["metrics"].items():
        lines.append(f"\n{target}")
        lines.append(f"  {'method':16s}{'MAE':>10s}{'RMSE':>10s}{'sMAPE%':>9s}{'MASE':>8s}"
                     f"{f'cover {100 * (high - low):.0f}%':>12s}")
        for name, row in table.items():
            cover = f"{row['coverage']:.2f}" if "coverage" in row else "-"
            lines.append(f"  {name:16s}{row['mae']:10.4g}{row['rmse']:10.4g}{row['smape']:9.2f}"
                         f"{row['mase']:8.3f}{cover:>12s}")
    return "\n".join(lines)


def evaluate(model, config: ForecastConfig) -> dict:
    """Backtest a loaded model on the series ``config`` names (no training)."""
    if model.meta.get("kind") == "global":
        from lstmkit.apps import global_runs

        return global_runs.evaluate(model, config)
    return backtest(model, load_series(config))


def predict(model, config: ForecastConfig):
    """Forecasts after the end of the series ``config`` names, as a DataFrame."""
    if model.meta.get("kind") == "global":
        from lstmkit.apps import global_runs

        return global_runs.predict(model, config)
    data = load_series(config)
    _check_columns(model, data)
    if future(model, data) is None:
        layout, _ = _restore(model)
        given = 0 if data.ahead is None else len(data.ahead)
        raise ValueError(f"predict: expected the future covariates "
                         f"{list(data.future_covariates)} for the {layout.horizon} steps after "
                         f"the last target (rows with an empty target), got {given}")
    return forecast_table(model, data, None)
