"""What a global forecaster reads at every step of every series, and how its answers map back.

Dimension legend: N series, T steps (padded to the longest series), L context, H horizon,
Q quantiles, P past covariates, F future covariates, S static covariates, m the season,
I = L + L P + H F + S (+ m with a calendar) inputs per step.

The network runs along each whole series (as ES-RNN does, Smyl 2020): after observing y_t it
reads, at step t, the last L values divided by the series' level at t,

    level_t = mean(|y_{t-m'+1}|, ..., |y_t|),  m' = max(m, 1),
    z_{t,j} = log(y_{t-L+1+j} / level_t)      (all targets positive: "log")
            = y_{t-L+1+j} / level_t - 1       (otherwise: "ratio"),

or, with ``normalise="es"`` (positive targets), by an exponential-smoothing level and
multiplicative season as ES-RNN does (``lstmkit.apps.smoothing``): each value of the window is
divided by l_t and by its own seasonal factor, and the label for t+h by l_t s_{t+1+(h-1) mod m}
(the first season's labels are then left out of training: its factors are read from it),

plus the window of past covariates, the next H values of the future covariates, the static
covariates and, when the series have dates, the position in the season of t+1 (one-hot). Its
head answers Q quantiles of z_{t+h} for h = 1..H, relative to a base (seasonal naive, in the same
units, or nothing). Because every step is an origin, one pass over a series forecasts from every
origin at once: a rolling backtest carries the recurrent state forward.

Inputs before the series start repeat its first value (the window is full from step 0); labels
past the known end are missing and masked out of the loss. Windows and labels are clipped to
+-CLIP in normalised units (after a season of zeros the level is zero and the ratio unbounded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from lstmkit.apps import smoothing
from lstmkit.tasks.panel import Panel

TRANSFORMS = ("log", "ratio")
NORMALISERS = ("level", "es")
BASES = ("none", "naive", "seasonal")
CLIP = 10.0
"""Normalised inputs and labels are clipped to +-CLIP: a level near zero (a season of zeros)
must not blow a window up, nor let a few labels of 1e8 rule the validation loss that chooses
the epoch."""


@dataclass(frozen=True)
class Spec:
    """The shape of the problem and the set-wide statistics, stored in the checkpoint."""

    context: int
    horizon: int
    season: int
    quantiles: tuple[float, ...]
    transform: str
    base: str
    past: int = 0
    future: int = 0
    static: int = 0
    calendar: bool = False
    covariate_mean: tuple[float, ...] = ()
    """Mean of each past then future covariate over the training rows."""
    covariate_std: tuple[float, ...] = ()
    normalise: str = "level"
    """"level" (the mean of the last season) or "es" (exponential smoothing)."""
    alpha: float = 0.0
    """The smoothing of the level with "es", chosen on the training part."""
    gamma: float = 0.0
    """The smoothing of the season with "es"."""

    def __post_init__(self):
        if self.normalise not in NORMALISERS:
            raise ValueError(f"normalise: expected one of {NORMALISERS}, got "
                             f"{self.normalise!r}")
        if self.normalise == "es" and self.transform != "log":
            raise ValueError("normalise: expected positive targets (the log transform) for "
                             f"'es', got the transform {self.transform!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform: expected one of {TRANSFORMS}, got {self.transform!r}")
        if self.base not in BASES:
            raise ValueError(f"base: expected one of {BASES}, got {self.base!r}")
        if self.base == "seasonal" and not 1 < self.season <= self.context:
            raise ValueError(f"base: expected a season in (1, context={self.context}] for "
                             f"'seasonal', got a season of {self.season}")

    @property
    def input_size(self) -> int:
        calendar = self.season if self.calendar else 0
        return self.context * (1 + self.past) + self.horizon * self.future + self.static + \
            calendar

    @property
    def output_size(self) -> int:
        return self.horizon * len(self.quantiles)

    def to_dict(self) -> dict:
        return {**asdict(self), "quantiles": list(self.quantiles),
                "covariate_mean": list(self.covariate_mean),
                "covariate_std": list(self.covariate_std)}

    @classmethod
    def from_dict(cls, data: dict) -> Spec:
        return cls(**{**data, **{k: tuple(data[k]) for k in
                                 ("quantiles", "covariate_mean", "covariate_std")}})


def make_spec(panel: Panel, context: int, horizon: int, season: int, quantiles, base: str,
              normalise: str = "level") -> Spec:
    """The spec for ``panel`` (the training part): transform, covariate statistics and, with
    ``normalise="es"``, the smoothing parameters."""
    positive = all(float(v.min()) > 0 for v in panel.values)
    alpha = gamma = 0.0
    if normalise == "es":
        smoothing.check(panel.values, panel.ids, season)
        alpha, gamma = smoothing.choose(list(panel.values), season)
    blocks = [np.concatenate(b) for b in (panel.past, panel.future) if b]
    stats = np.concatenate(blocks, 1) if blocks else np.zeros((1, 0))
    std = stats.std(0)
    return Spec(context, horizon, season, tuple(quantiles), "log" if positive else "ratio",
                base, len(panel.past_names) if panel.past else 0,
                len(panel.future_names) if panel.future else 0,
                0 if panel.static is None else panel.static.shape[1],
                panel.phase is not None and season > 1, tuple(stats.mean(0).tolist()),
                tuple(np.where(std > 0, std, 1.0).tolist()), normalise, alpha, gamma)


@dataclass(frozen=True)
class Steps:
    """Every step of every series, padded to T: model inputs, labels and what undoes them."""

    x: torch.Tensor  # (N, T, I)
    y: torch.Tensor  # (N, T, H) labels in normalised units less base, 0 past the series end
    known: torch.Tensor  # (N, T, H) 1 where the label is for training (before the hold)
    lengths: torch.Tensor  # (N,) observed steps of each series
    scale: np.ndarray  # (N, T, H) what the label for t+h was divided by (the level at t)
    base: np.ndarray  # (N, T, H) the base, in normalised units


def levels(y: np.ndarray, width: int) -> np.ndarray:
    """Mean of |y| over the last ``width`` points up to each step (fewer at the start): (n,).

    Examples:
        >>> levels(np.array([2.0, 4.0, 6.0]), 2)
        array([2., 3., 5.])
    """
    total = np.concatenate([[0.0], np.cumsum(np.abs(y))])
    steps = np.arange(1, len(y) + 1)
    start = np.maximum(steps - width, 0)
    return (total[steps] - total[start]) / (steps - start)


def normalise(values: np.ndarray, level: np.ndarray, transform: str) -> np.ndarray:
    """Values (n, W) relative to the level (broadcast against them: (n, 1) or (n, W))."""
    level = np.maximum(level, 1e-8)
    if transform == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(values / level)
    return values / level - 1


def denormalise(z: np.ndarray, level: np.ndarray, transform: str) -> np.ndarray:
    """Undo :func:`normalise`: ``level`` broadcasts against ``z``."""
    level = np.maximum(level, 1e-8)
    return level * np.exp(z) if transform == "log" else level * (z + 1)


def series_steps(spec: Spec, y: np.ndarray, past, future, static, phase, known_until: int,
                 smoothed: tuple[np.ndarray, np.ndarray] | None = None):
    """One series' inputs (n, I), labels (n, H), label mask, label scale (n, H) and base (n, H).

    ``known_until``: labels at positions >= it are masked (the validation or test part).
    ``smoothed``: with "es", the series' level (n,) and seasonal factors (n + m,) when already
    computed (:func:`smoothing.smooth`).
    """
    n, L, H = len(y), spec.context, spec.horizon
    rows = np.arange(n)
    window = np.clip(rows[:, None] + np.arange(1 - L, 1), 0, None)  # (n, L)
    m = max(spec.season, 1)
    if spec.normalise == "es":
        level, factors = smoothed or _smoothed(spec, [y])[0]
        window_scale = level[:, None] * factors[window]
        label_scale = level[:, None] * factors[rows[:, None] + 1 + np.arange(H) % m]
    else:
        level = levels(y, m)[:, None]
        window_scale, label_scale = level, np.repeat(level, H, 1)
    z = np.clip(normalise(y[window], window_scale, spec.transform), -CLIP, CLIP)  # (n, L)
    parts = [z]
    mean = np.asarray(spec.covariate_mean)
    std = np.asarray(spec.covariate_std)
    if spec.past:
        scaled = (past - mean[:spec.past]) / std[:spec.past]
        parts.append(scaled[window].reshape(n, -1))
    if spec.future:
        scaled = (future - mean[spec.past:]) / std[spec.past:]
        ahead = np.clip(rows[:, None] + np.arange(1, H + 1), 0, len(future) - 1)
        parts.append(scaled[ahead].reshape(n, -1))
    if spec.static:
        parts.append(np.repeat(static[None], n, 0))
    if spec.calendar:
        parts.append(np.eye(spec.season)[(phase + rows + 1) % spec.season])
    target_rows = rows[:, None] + np.arange(1, H + 1)  # (n, H)
    known = target_rows < known_until
    if spec.normalise == "es":
        known[:m - 1] = False  # the first season's factors were read from that season
    labels = np.zeros((n, H))
    inside = target_rows < n
    labels[inside] = y[target_rows[inside]]
    labels = np.clip(normalise(labels, label_scale, spec.transform), -CLIP, CLIP)
    base = _base(z, spec)
    labels = np.where(inside, labels - base, 0.0)  # kept past known_until for validation
    return np.concatenate(parts, 1), labels, known, label_scale, base


def _smoothed(spec: Spec, values) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each series' smoothed level (n,) and seasonal factors (n + m,), all series at once."""
    y, lengths = smoothing.pad(values)
    level, factors, _ = smoothing.smooth(y, lengths, spec.season, np.array([spec.alpha]),
                                         np.array([spec.gamma]))
    m = max(spec.season, 1)
    return [(level[i, 0, :n], factors[i, 0, :n + m]) for i, n in enumerate(lengths)]


def _base(z: np.ndarray, spec: Spec) -> np.ndarray:
    """The base forecast in normalised units from the (n, L) windows: (n, H)."""
    n, H, L, m = len(z), spec.horizon, spec.context, spec.season
    if spec.base == "none":
        return np.zeros((n, H))
    if spec.base == "naive":
        return np.repeat(z[:, -1:], H, 1)
    h = np.arange(1, H + 1)
    return z[:, L - 1 + h - m * (1 + (h - 1) // m)]


def panel_steps(spec: Spec, panel: Panel, hold: int = 0) -> Steps:
    """:class:`Steps` for every series; the labels of each series' last ``hold`` points are
    masked (0: every label inside the series is known)."""
    lengths = panel.lengths()
    T, N, H = int(lengths.max()), len(panel), spec.horizon
    x = np.zeros((N, T, spec.input_size), np.float32)
    y = np.zeros((N, T, H), np.float32)
    known = np.zeros((N, T, H), np.float32)
    scale = np.ones((N, T, H))
    base = np.zeros((N, T, H))
    smoothed = _smoothed(spec, panel.values) if spec.normalise == "es" else [None] * N
    for i, values in enumerate(panel.values):
        n = len(values)
        past = panel.past[i] if panel.past else None
        future = panel.future[i] if panel.future else None
        static = panel.static[i] if panel.static is not None else None
        phase = panel.phase[i] if panel.phase is not None else 0
        parts = series_steps(spec, values, past, future, static, phase, n - hold,
                             smoothed[i])
        x[i, :n], y[i, :n], known[i, :n], scale[i, :n], base[i, :n] = parts
    return Steps(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(known),
                 torch.from_numpy(lengths), scale, base)


def masked_pinball(output: torch.Tensor, y: torch.Tensor, known: torch.Tensor, spec: Spec
                   ) -> torch.Tensor:
    """Mean quantile loss over the known labels: output (B, T, H*Q), y and known (B, T, H)."""
    q = torch.tensor(spec.quantiles, dtype=output.dtype, device=output.device)
    error = y.unsqueeze(-1) - output.view(*y.shape, len(spec.quantiles))  # (B, T, H, Q)
    loss = torch.maximum(q * error, (q - 1) * error) * known.unsqueeze(-1)
    return loss.sum() / (known.sum().clamp(min=1) * len(spec.quantiles))


def at_origins(output: torch.Tensor, steps: Steps, series: np.ndarray, rows: np.ndarray,
               spec: Spec) -> np.ndarray:
    """Sorted quantiles in normalised units, base added, at (series, step) pairs: (S, H, Q)."""
    q = output[series, rows].view(len(series), spec.horizon, len(spec.quantiles))
    q = q.sort(-1).values.detach().cpu().numpy().astype(float)
    return q + steps.base[series, rows][..., None]
