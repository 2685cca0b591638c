"""Exponential-smoothing pre-processing for the global forecaster, as in ES-RNN (Smyl 2020).

A multiplicative level and season, no trend (ES-RNN's form), filtered along each series:

    l_t = alpha y_t / s_t + (1 - alpha) l_{t-1}
    s_{t+m} = gamma y_t / l_t + (1 - gamma) s_t

started from the first season: l_{-1} is its mean and s_0..s_{m-1} its values divided by that
mean (with m = 1 there is no season: s is 1 throughout). After observing y_t the factors
s_{t+1}..s_{t+m} are known, so the forecast for t + h uses l_t s_{t+1+(h-1) mod m}.

Where ES-RNN learns alpha and gamma per series jointly with the network, here one pair is chosen
for the whole set, on its training part, by the smallest mean squared one-step error on the log
scale, log y_t - log(l_{t-1} s_t), over a grid: both numbers go into the checkpoint, and no
value after a forecast origin can reach the features at that origin.
"""

from __future__ import annotations

import numpy as np

ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
GAMMAS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)


def smooth(y: np.ndarray, lengths: np.ndarray, season: int, alpha: np.ndarray,
           gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level, seasonal factors and one-step log errors of padded positive series.

    Args:
        y: (N, T) values, padded past each series' length (the padding is ignored).
        lengths: (N,) observed points of each series, each at least ``season``.
        season: m.
        alpha, gamma: (G,) smoothing parameters, G pairs tried at once.

    Returns:
        level (N, G, T): l_t; season (N, G, T + m): s_t (s_{t+m} is known after y_t); error
        (N, G, T): the one-step log error at t (NaN in the first season and past the end).

    Examples:
        >>> level, s, _ = smooth(np.array([[2.0, 4.0, 2.0, 4.0]]), np.array([4]), 2,
        ...                      np.array([0.5]), np.array([0.5]))
        >>> level[0, 0].tolist(), (3 * s[0, 0, :4]).round(6).tolist()
        ([3.0, 3.0, 3.0, 3.0], [2.0, 4.0, 2.0, 4.0])
    """
    N, T = y.shape
    m = max(season, 1)
    alpha, gamma = np.asarray(alpha, float)[None], np.asarray(gamma, float)[None]  # (1, G)
    G = alpha.shape[1]
    first = y[:, :m]  # (N, m)
    start = first.mean(1, keepdims=True)  # (N, 1)
    level = np.zeros((N, G, T))
    factors = np.ones((N, G, T + m))
    if m > 1:
        factors[:, :, :m] = (first / start)[:, None, :]
    error = np.full((N, G, T), np.nan)
    previous = np.repeat(start, G, 1)  # (N, G)
    for t in range(T):
        inside = (t < lengths)[:, None]
        value = np.where(inside, y[:, t:t + 1], previous * factors[:, :, t])  # padding: held
        if t >= m:
            error[:, :, t] = np.where(inside, np.log(value / (previous * factors[:, :, t])),
                                      np.nan)
        current = alpha * value / factors[:, :, t] + (1 - alpha) * previous
        level[:, :, t] = current
        if m > 1:
            factors[:, :, t + m] = gamma * value / current + (1 - gamma) * factors[:, :, t]
        previous = current
    return level, factors, error


def choose(values: list[np.ndarray], season: int) -> tuple[float, float]:
    """The (alpha, gamma) of the grid with the smallest mean squared one-step log error over
    ``values`` (the training part of every series); gamma is 0 without a season."""
    gammas = GAMMAS if season > 1 else (0.0,)
    alpha, gamma = (np.array(g, float).ravel() for g in np.meshgrid(ALPHAS, gammas))
    y, lengths = pad(values)
    _, _, error = smooth(y, lengths, season, alpha, gamma)
    per_series = np.nanmean(error ** 2, 2)  # (N, G): each series counts once
    best = int(np.argmin(np.nanmean(per_series, 0)))
    return float(alpha[best]), float(gamma[best])


def pad(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) values padded with ones, and the (N,) lengths."""
    lengths = np.array([len(v) for v in values])
    y = np.ones((len(values), int(lengths.max())))
    for i, v in enumerate(values):
        y[i, :len(v)] = v
    return y, lengths


def check(values: list[np.ndarray], ids, season: int) -> None:
    """Refuse series that multiplicative smoothing cannot take, with the reason."""
    for key, v in zip(ids, values):
        if not np.all(v > 0):
            raise ValueError(f"normalise: expected positive targets for 'es' (a multiplicative "
                             f"level and season), got a value <= 0 in series {key!r}; use "
                             f"'level'")
        if len(v) < max(season, 1) + 1:
            raise ValueError(f"normalise: expected at least a season and one point ({season + 1})"
                             f" per series for 'es', got {len(v)} in series {key!r}")
