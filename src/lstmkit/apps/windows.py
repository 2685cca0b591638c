"""Forecasting windows: from a scaled series to model inputs and labels, and back.

Dimension legend: S windows (forecast origins), L context steps, H horizon steps, K targets,
P past covariates, F future covariates, C = K + P + F columns, Q quantiles.

A window at origin ``o`` reads rows ``o-L .. o-1`` and forecasts the targets at rows
``o .. o+H-1``. Two scalings, both undone before anything is reported:

1. a global one per column (``Scaler``), fitted on the training rows only;
2. per window, when ``window_norm`` is on, each target is centred on the mean of its context and
   divided by the context's standard deviation (as RevIN, Kim et al. 2022, without the affine
   part). This lets a model trained on one level of a trending series forecast at another.

With ``base`` "naive" or "seasonal", the model answers the difference from that simple forecast
(the last value, or the last season repeated) instead of the values themselves: a skip connection
that starts training from the baseline, in the spirit of hybrids such as ES-RNN.

Without future covariates the model reads the context and answers every horizon step at once
from its last step (a direct multi-horizon forecast). With future covariates the window grows by
H steps that carry those covariates and zeros elsewhere, plus a column that says which steps are
observed, and the model answers each horizon step at that step: the forecast for ``o + h`` is
read right after the network has seen the covariates of ``o + h``, instead of from the window's
end, H steps of zeros later (that design made a price-driven series worse with its price than
without it).

Intervals are calibrated on held-out windows by conformalized quantile regression (Romano et
al. 2019): each pair of quantiles (q, 1 - q) is widened (or narrowed) by the empirical
quantile of the held-out errors ``max(lower - y, y - upper)`` at level ``(1 - a)(1 + 1/n)``,
separately per horizon step and target, in window units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BASES = ("none", "naive", "seasonal")

STD_FLOOR = 0.05
"""Smallest per-window standard deviation, in globally scaled units: keeps flat windows from
blowing up."""


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation: (x - mean) / std."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(0)
        return cls(values.mean(0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        return values * self.std[columns] + self.mean[columns]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Scaler:
        return cls(np.asarray(data["mean"], float), np.asarray(data["std"], float))


@dataclass(frozen=True)
class Layout:
    """The shape of the problem, stored in the checkpoint."""

    context: int
    horizon: int
    targets: int
    past: int
    future: int
    quantiles: tuple[float, ...]
    window_norm: bool = True
    base: str = "none"
    """What the model's output is added to: "none", "naive" or "seasonal" (needs ``season``)."""
    season: int = 1

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"base: expected one of {BASES}, got {self.base!r}")
        if self.base == "seasonal" and self.season > self.context:
            raise ValueError(f"base: expected a context of at least one season ({self.season}) "
                             f"for 'seasonal', got {self.context}")

    @property
    def input_size(self) -> int:
        return self.targets + self.past + self.future + (1 if self.future else 0)

    @property
    def output_size(self) -> int:
        return self.horizon * self.targets * len(self.quantiles)

    @property
    def steps(self) -> int:
        return self.context + (self.horizon if self.future else 0)

    @property
    def per_step(self) -> bool:
        """Whether the model answers each horizon step at that step (future covariates)."""
        return self.future > 0

    @property
    def head_size(self) -> int:
        """Outputs of the model's head: per step, or for the whole horizon at the end."""
        return self.targets * len(self.quantiles) * (1 if self.per_step else self.horizon)


@dataclass(frozen=True)
class Windows:
    """Model inputs for S origins and what is needed to undo the window scaling."""

    x: torch.Tensor  # (S, steps, input_size)
    level: torch.Tensor  # (S, K) the context mean of each target (0 without window_norm)
    spread: torch.Tensor  # (S, K) the context std of each target (1 without window_norm)
    base: torch.Tensor  # (S, H, K) the baseline forecast in window units (zeros without base)
    y: torch.Tensor | None  # (S, H, K) labels in window units less base, None past the end


def make_windows(values: np.ndarray, origins: np.ndarray, layout: Layout) -> Windows:
    """Windows at ``origins`` over globally scaled ``values`` (N, C); labels where known."""
    k, kp = layout.targets, layout.targets + layout.past
    context = values[origins[:, None] + np.arange(-layout.context, 0)]  # (S, L, C)
    level = np.zeros((len(origins), k))
    spread = np.ones((len(origins), k))
    if layout.window_norm:
        level = context[:, :, :k].mean(1)
        spread = np.maximum(context[:, :, :k].std(1), STD_FLOOR)
    context = context.copy()
    context[:, :, :k] = (context[:, :, :k] - level[:, None]) / spread[:, None]
    base = _base(context[:, :, :k], layout)  # (S, H, K)
    x = context
    if layout.future:
        ahead = values[origins[:, None] + np.arange(layout.horizon)]  # (S, H, C)
        future = np.zeros_like(ahead)
        future[:, :, kp:] = ahead[:, :, kp:]
        seen = np.concatenate([np.ones(context.shape[:2]), np.zeros(future.shape[:2])], 1)
        x = np.concatenate([np.concatenate([context, future], 1), seen[..., None]], 2)
    y = None
    if origins.max() + layout.horizon <= len(values):
        y = values[origins[:, None] + np.arange(layout.horizon)][:, :, :k]  # (S, H, K)
        y = (y - level[:, None]) / spread[:, None] - base
        y = torch.tensor(y, dtype=torch.float32)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return Windows(as_tensor(x), as_tensor(level), as_tensor(spread), as_tensor(base), y)


def _base(context: np.ndarray, layout: Layout) -> np.ndarray:
    """The baseline forecast from the (S, L, K) target context: (S, H, K)."""
    steps = np.arange(layout.horizon)
    if layout.base == "naive":
        return np.repeat(context[:, -1:], layout.horizon, 1)
    if layout.base == "seasonal":
        return context[:, layout.context - layout.season + steps % layout.season]
    return np.zeros((len(context), layout.horizon, context.shape[2]))


def quantile_outputs(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(S, H*K*Q) head output -> (S, H, K, Q)."""
    return output.reshape(-1, layout.horizon, layout.targets, len(layout.quantiles))


def forecast_outputs(model, x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The model's answer for windows ``x`` (S, steps, I), as (S, H*K*Q)."""
    output = model(x)[0]
    if layout.per_step:
        output = output[:, layout.context:]  # (S, H, K*Q): one answer per horizon step
    return output.reshape(len(x), -1)


def conformal_offsets(q: np.ndarray, y: np.ndarray, quantiles) -> np.ndarray:
    """How much to widen each quantile pair so that held-out windows are covered.

    Args:
        q: (S, H, K, Q) sorted quantile forecasts of the held-out windows.
        y: (S, H, K) their actual values, in the same units.
        quantiles: the Q levels, ascending and symmetric around 0.5.

    Returns:
        (H, K, Q // 2) offsets: pair j is (quantiles[j], quantiles[-1 - j]).

    Examples:
        >>> q = np.array([[[[0.0, 1.0, 2.0]]], [[[0.0, 1.0, 2.0]]]])  # (2, 1, 1, 3)
        >>> conformal_offsets(q, np.array([[[3.0]], [[1.0]]]), (0.1, 0.5, 0.9))[..., 0]
        array([[1.]])
    """
    n, pairs = len(q), len(quantiles) // 2
    out = np.zeros(q.shape[1:3] + (pairs,))
    for j in range(pairs):
        alpha = 1 - (quantiles[-1 - j] - quantiles[j])
        error = np.maximum(q[..., j] - y, y - q[..., -1 - j])  # (S, H, K)
        level = min(1.0, np.ceil((n + 1) * (1 - alpha)) / n)
        out[..., j] = np.quantile(error, level, axis=0, method="higher")
    return out


def widen(q: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """(S, H, K, Q) sorted quantiles with each pair moved apart by ``offsets`` (H, K, Q//2);
    the pair never crosses the median."""
    if offsets is None:
        return q
    q = q.copy()
    for j in range(offsets.shape[-1]):
        middle = q[..., q.shape[-1] // 2]
        q[..., j] = np.minimum(q[..., j] - offsets[..., j], middle)
        q[..., -1 - j] = np.maximum(q[..., -1 - j] + offsets[..., j], middle)
    return q


def pinball_loss(output: torch.Tensor, y: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Mean quantile loss of (S, H*K*Q) outputs against (S, H, K) labels."""
    q = torch.tensor(layout.quantiles, dtype=output.dtype, device=output.device)
    error = y.unsqueeze(-1) - quantile_outputs(output, layout)  # (S, H, K, Q)
    return torch.maximum(q * error, (q - 1) * error).mean()


def window_quantiles(output: torch.Tensor, windows: Windows, layout: Layout) -> np.ndarray:
    """Outputs in window units, the base added and the quantiles sorted: (S, H, K, Q)."""
    q = quantile_outputs(output, layout).sort(-1).values + windows.base[..., None]
    return q.detach().cpu().numpy().astype(float)


def to_units(output: torch.Tensor, windows: Windows, scaler: Scaler, layout: Layout,
             offsets: np.ndarray | None = None) -> np.ndarray:
    """Outputs back in the data's units, quantiles sorted so that they never cross, intervals
    widened by the conformal ``offsets`` when given.

    Shape: (S, H*K*Q) -> (S, H, K, Q).
    """
    q = widen(window_quantiles(output, windows, layout), offsets)
    q = q * windows.spread[:, None, :, None].numpy() + windows.level[:, None, :, None].numpy()
    k = layout.targets
    return q * scaler.std[:k, None] + scaler.mean[:k, None]
