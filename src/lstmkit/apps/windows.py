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

With future covariates the window grows by H steps that carry those covariates and zeros
elsewhere, plus a column that says which steps are observed; the model reads the whole window and
answers from its last step: a direct multi-horizon forecast.
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
    return output.view(-1, layout.horizon, layout.targets, len(layout.quantiles))


def pinball_loss(output: torch.Tensor, y: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Mean quantile loss of (S, H*K*Q) outputs against (S, H, K) labels."""
    q = torch.tensor(layout.quantiles, dtype=output.dtype, device=output.device)
    error = y.unsqueeze(-1) - quantile_outputs(output, layout)  # (S, H, K, Q)
    return torch.maximum(q * error, (q - 1) * error).mean()


def to_units(output: torch.Tensor, windows: Windows, scaler: Scaler, layout: Layout
             ) -> np.ndarray:
    """Outputs back in the data's units, quantiles sorted so that they never cross.

    Shape: (S, H*K*Q) -> (S, H, K, Q).
    """
    q = quantile_outputs(output, layout).sort(-1).values + windows.base[..., None]
    q = q * windows.spread[:, None, :, None] + windows.level[:, None, :, None]
    q = q.detach().cpu().numpy().astype(float)
    k = layout.targets
    return q * scaler.std[:k, None] + scaler.mean[:k, None]
