"""Simple baselines every LSTM result is set against.

Forecasting (each takes the history up to the origin, shape (N,), and returns (H,)): naive (the
last value), seasonal naive (the value one season before), the mean of the history, and
exponential smoothing from statsmodels (Holt's damped trend, plus a seasonal term when at least
two seasons are known). Classification: nearest neighbour and logistic regression on summary
features of each sequence; per step: the majority class and logistic regression on the step.
"""

from __future__ import annotations

import time
import warnings
from concurrent.futures import ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

from lstmkit._optional import require


def _one_thread():
    """BLAS limited to one thread: these fits are small, and on a busy machine a BLAS spinning
    on two threads runs them 40 times slower (measured here: 13.5 s against 0.3 s)."""
    return require("threadpoolctl", "apps", "the baselines").threadpool_limits(1)


def naive(history: np.ndarray, horizon: int, season: int = 1) -> np.ndarray:
    return np.full(horizon, history[-1], dtype=float)


def seasonal_naive(history: np.ndarray, horizon: int, season: int = 1) -> np.ndarray:
    """y_{T+h} = y_{T+h-m(k+1)} with k = (h-1) // m: the last season repeated."""
    last_season = history[-season:]
    return np.resize(last_season, horizon).astype(float)


def mean(history: np.ndarray, horizon: int, season: int = 1) -> np.ndarray:
    return np.full(horizon, history.mean(), dtype=float)


def ets(history: np.ndarray, horizon: int, season: int = 1) -> np.ndarray | None:
    """Exponential smoothing forecast, or None when the model cannot be fitted."""
    holtwinters = require("statsmodels.tsa.holtwinters", "apps", "the ETS baseline")
    seasonal = "add" if season > 1 and len(history) >= 2 * season + 2 else None
    try:
        with warnings.catch_warnings(), _one_thread():
            warnings.simplefilter("ignore")  # convergence chatter on short series
            model = holtwinters.ExponentialSmoothing(
                np.asarray(history, float), trend="add", damped_trend=True, seasonal=seasonal,
                seasonal_periods=season if seasonal else None, initialization_method="estimated")
            forecast = model.fit().forecast(horizon)
    except (ValueError, np.linalg.LinAlgError):
        return None
    return None if not np.all(np.isfinite(forecast)) else np.asarray(forecast, float)


FORECASTERS = {"naive": naive, "seasonal_naive": seasonal_naive, "mean": mean, "ets": ets}
"""Name -> forecaster(history, horizon, season)."""


def summary_features(sequences: list[np.ndarray]) -> np.ndarray:
    """Per channel: mean, standard deviation, min, max, first and last value, slope; plus the
    length. Shape: (N, 7 C + 1)."""
    rows = []
    for seq in sequences:  # (T, C)
        steps = np.arange(len(seq)) - (len(seq) - 1) / 2
        slope = (steps[:, None] * seq).sum(0) / max((steps ** 2).sum(), 1e-12)
        rows.append(np.concatenate([seq.mean(0), seq.std(0), seq.min(0), seq.max(0), seq[0],
                                    seq[-1], slope, [len(seq)]]))
    return np.stack(rows)


def classify_baselines(train: list[np.ndarray], train_y: np.ndarray, test: list[np.ndarray],
                       ) -> dict[str, np.ndarray]:
    """Test predictions of 1-NN and logistic regression on standardised summary features."""
    preprocessing = require("sklearn.preprocessing", "apps", "classification baselines")
    neighbors = require("sklearn.neighbors", "apps", "classification baselines")
    linear = require("sklearn.linear_model", "apps", "classification baselines")
    scaler = preprocessing.StandardScaler().fit(summary_features(train))
    a, b = scaler.transform(summary_features(train)), scaler.transform(summary_features(test))
    models = {"1-NN (summary features)": neighbors.KNeighborsClassifier(1),
              "logistic regression (summary features)": linear.LogisticRegression(max_iter=2000)}
    with _one_thread():
        return {name: model.fit(a, train_y).predict(b) for name, model in models.items()}


def step_baselines(train: list[np.ndarray], train_y: list[np.ndarray], test: list[np.ndarray],
                   ) -> dict[str, np.ndarray]:
    """Test predictions per step (concatenated over the sequences): the most frequent class of
    the training steps, and logistic regression on each step's standardised features alone."""
    preprocessing = require("sklearn.preprocessing", "apps", "sequence labelling baselines")
    linear = require("sklearn.linear_model", "apps", "sequence labelling baselines")
    a, y = np.concatenate(train), np.concatenate(train_y)
    b = np.concatenate(test)
    majority = np.full(len(b), np.bincount(y).argmax())
    if len(np.unique(y)) < 2:
        return {"majority class": majority}
    scaler = preprocessing.StandardScaler().fit(a)
    with _one_thread():
        model = linear.LogisticRegression(max_iter=1000).fit(scaler.transform(a), y)
        return {"majority class": majority,
                "logistic regression (each step alone)": model.predict(scaler.transform(b))}
STATSFORECAST = ("autoets", "autotheta", "autoarima", "seasonal_naive", "naive")
"""The statsforecast methods a global forecast is set against (names as in its reports)."""


def statsforecast_methods(names, season: int) -> dict:
    """Name -> a statsforecast model; unknown names raise with the valid ones."""
    models = require("statsforecast.models", "forecast", "the statsforecast baselines")
    make = {"autoets": lambda: models.AutoETS(season_length=season),
            "autotheta": lambda: models.AutoTheta(season_length=season),
            "autoarima": lambda: models.AutoARIMA(season_length=season),
            "seasonal_naive": lambda: models.SeasonalNaive(season_length=season),
            "naive": lambda: models.Naive()}
    unknown = [n for n in names if n not in make]
    if unknown:
        raise ValueError(f"baselines: expected some of {list(make)}, got {unknown[0]!r}")
    return {name: make[name]() for name in names}


def statsforecast_forecast(model, history: np.ndarray, horizon: int) -> np.ndarray:
    """One statsforecast model's point forecast of ``history``; seasonal naive where the
    model cannot fit (a series shorter than its season, a constant one)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forecast = model.forecast(y=np.asarray(history, float), h=horizon)["mean"]
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError):
        forecast = np.full(horizon, np.nan)
    forecast = np.asarray(forecast, float)
    if not np.all(np.isfinite(forecast)):
        forecast = seasonal_naive(history, horizon, getattr(model, "season_length", 1))
    return forecast


def _forecast_one_thread(model, history: np.ndarray, horizon: int) -> np.ndarray:
    with _one_thread():
        return statsforecast_forecast(model, history, horizon)


def _warm() -> None:
    require("statsforecast.models", "forecast", "the statsforecast baselines")


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` processes with statsforecast imported, kept for the whole run: under
    load, starting one costs several seconds, which must not eat into a method's budget."""
    if jobs not in _POOLS:
        # spawn, not fork: the parent has torch's thread pools, which a fork can leave locked
        pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"))
        wait([pool.submit(_warm) for _ in range(jobs)])
        _POOLS[jobs] = pool
    return _POOLS[jobs]


def statsforecast_many(model, histories: list[np.ndarray], horizon: int, jobs: int = 1,
                       budget: float | None = None) -> list[np.ndarray | None]:
    """:func:`statsforecast_forecast` of every history, on ``jobs`` processes, within a budget.

    Each history is fitted alone, exactly as with one process (so the forecasts do not depend
    on ``jobs``). With ``budget`` (seconds, counted once the processes are ready) the fits not
    finished by then are given up: their entries are None, and the caller says how many did
    not finish instead of scoring a part.
    """
    pool = None if jobs == 1 else _pool(jobs)
    deadline = None if budget is None else time.perf_counter() + budget
    if pool is None:
        found: list[np.ndarray | None] = []
        for y in histories:
            late = deadline is not None and time.perf_counter() > deadline
            found.append(None if late else _forecast_one_thread(model, y, horizon))
        return found
    futures = [pool.submit(_forecast_one_thread, model, y, horizon) for y in histories]
    wait(futures, timeout=None if deadline is None else max(deadline - time.perf_counter(), 0))
    for f in futures:
        f.cancel()  # those not started; a running one finishes, and is kept only if done now
    return [f.result() if f.done() and not f.cancelled() else None for f in futures]
