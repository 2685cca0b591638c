"""Evaluation metrics, on NumPy arrays in the data's own units (never on scaled values).

Forecasting: MAE, RMSE, sMAPE (in percent, as in the M4 competition), MASE (scaled by the
in-sample MAE of the seasonal naive forecast, Hyndman & Koehler 2006), interval coverage and the
pinball (quantile) loss. Classification: accuracy, macro-F1, the confusion matrix. Language
models: bits per character.
"""

from __future__ import annotations

import math

import numpy as np


def mae(actual, forecast) -> float:
    return float(np.mean(np.abs(np.asarray(actual) - np.asarray(forecast))))


def rmse(actual, forecast) -> float:
    return float(np.sqrt(np.mean((np.asarray(actual) - np.asarray(forecast)) ** 2)))


def smape(actual, forecast) -> float:
    """Symmetric MAPE in percent, 200 |y - f| / (|y| + |f|); a pair of zeros counts as 0."""
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    scale = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(2 * np.abs(actual - forecast), scale, out=np.zeros_like(scale),
                      where=scale > 0)
    return float(100 * ratio.mean())


def mase_scale(history, season: int = 1) -> float:
    """The in-sample MAE of the seasonal naive forecast, y_t - y_{t-m}, over ``history``."""
    history = np.asarray(history, float)
    if len(history) <= season:
        raise ValueError(f"MASE: expected more than season={season} points of history, got "
                         f"{len(history)}")
    return float(np.mean(np.abs(history[season:] - history[:-season])))


def mase(actual, forecast, history, season: int = 1) -> float:
    """MAE of the forecast over the in-sample seasonal naive MAE of ``history``."""
    scale = mase_scale(history, season)
    return mae(actual, forecast) / scale if scale > 0 else math.inf


def coverage(actual, lower, upper) -> float:
    """Fraction of actual values inside [lower, upper]."""
    actual = np.asarray(actual)
    return float(np.mean((actual >= np.asarray(lower)) & (actual <= np.asarray(upper))))


def pinball(actual, forecast, quantile: float) -> float:
    """Mean quantile loss: q (y - f) when y >= f, else (1 - q) (f - y)."""
    error = np.asarray(actual) - np.asarray(forecast)
    return float(np.mean(np.maximum(quantile * error, (quantile - 1) * error)))


def confusion_matrix(actual, predicted, classes: int) -> np.ndarray:
    """Counts with rows the true class and columns the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual), np.asarray(predicted)), 1)
    return matrix


def accuracy(actual, predicted) -> float:
    return float(np.mean(np.asarray(actual) == np.asarray(predicted)))


def macro_f1(actual, predicted, classes: int) -> float:
    """The F1 score of each class, averaged with equal weights (a class never predicted nor
    present counts as 0)."""
    matrix = confusion_matrix(actual, predicted, classes)
    hits = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)  # predicted + actual
    f1 = np.divide(2 * hits, denominator, out=np.zeros(classes), where=denominator > 0)
    return float(f1.mean())


def per_class(matrix: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """Per class of a confusion matrix (rows true, columns predicted): precision (the share of
    its predictions that are right), recall (the share of its members found), F1 and support
    (its members)."""
    hits = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros(len(hits)), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros(len(hits)), where=actual > 0)
    f1 = np.divide(2 * hits, predicted + actual, out=np.zeros(len(hits)),
                   where=predicted + actual > 0)
    return {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for c, p, r, f, n in zip(classes, precision, recall, f1, actual)}


def bits_per_char(nats: float) -> float:
    """Cross-entropy per character in bits, from nats."""
    return nats / math.log(2)
