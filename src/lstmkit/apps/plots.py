"""Pictures, drawn with matplotlib's Agg backend (no display needed) and written atomically.
Every axis says what it shows and in which units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit._optional import require
from lstmkit.io import atomic_write


def _pyplot():
    matplotlib = require("matplotlib", "apps", "plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "apps", "plots")


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)


def forecast_plot(path: Path, data, table, report: dict) -> None:
    """History, backtest forecasts with their interval, and the forecast ahead, per target."""
    plt = _pyplot()
    targets = data.targets
    figure, axes = plt.subplots(len(targets), 1, figsize=(10, 3.2 * len(targets)), squeeze=False)
    quantiles = [c for c in table.columns if c.startswith("q")]
    low, mid, high = quantiles[0], quantiles[len(quantiles) // 2], quantiles[-1]
    first = report["origin_rows"][0] if report else len(data.frame)
    start = max(0, first - 4 * report["horizon"]) if report else 0
    for axis, target in zip(axes[:, 0], targets):
        history = data.frame[target].iloc[start:]
        axis.plot(history.index, history.to_numpy(), color="black", lw=1, label="data")
        rows = table[table["target"] == target]
        for (kind, _origin), part in rows.groupby(["kind", "origin"], sort=False):
            color = "tab:blue" if kind == "backtest" else "tab:red"
            axis.fill_between(part["time"], part[low], part[high], color=color, alpha=0.2, lw=0)
            axis.plot(part["time"], part[mid], color=color, lw=1.5)
            if "seasonal_naive" in part:
                axis.plot(part["time"], part["seasonal_naive"], color="tab:gray", lw=1, ls="--")
        axis.set_title(f"{data.name}: {target}")
        axis.set_xlabel(_time_label(data.frame.index))
        axis.set_ylabel(f"{target} (the data's units)")
        axis.plot([], [], color="tab:blue", label=f"LSTM backtest (median, {low}-{high})")
        axis.plot([], [], color="tab:red", label="LSTM forecast ahead")
        if "seasonal_naive" in rows:
            axis.plot([], [], color="tab:gray", ls="--", label="seasonal naive")
        axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    _save(figure, path)


def _time_label(index) -> str:
    if getattr(index, "freqstr", None):
        return f"time (steps of {index.freqstr})"
    return "time" if getattr(index, "dtype", None) is not None and index.dtype.kind == "M" \
        else "time (steps)"


def confusion_plot(path: Path, matrix: np.ndarray, labels: list[str], title: str) -> None:
    """A confusion matrix: rows the true class, columns the predicted one; each cell shows its
    count and its share of the true class (the row), which also sets its colour, so a rare
    class's errors show as plainly as a frequent one's."""
    plt = _pyplot()
    size = 3.0 + 0.55 * len(labels)
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    totals = matrix.sum(1, keepdims=True)
    rates = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04).set_label(
        "share of the true class (recall on the diagonal)")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, f"{count}\n{rates[i, j]:.0%}", ha="center", va="center",
                  color="white" if rates[i, j] > 0.5 else "black", fontsize=7)
    axis.set_title(title)
    figure.tight_layout()
    _save(figure, path)


def transcription_plot(path: Path, spectrogram: np.ndarray, posteriors: np.ndarray,
                       alphabet: str, reference: str, decoded: str, title: str) -> None:
    """Log-mel spectrogram (T, M) above the CTC posteriors (S, V) of the same utterance, with
    the labels that some step makes likely named on the axis and the decoded text."""
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5))
    top.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma")
    top.set_ylabel("mel filter")
    top.set_xlabel("frame (10 ms)")
    top.set_title(f"{title}\nreference: {reference!r}   decoded: {decoded!r}", fontsize=9)
    names = ["blank"] + ["space" if c == " " else c for c in alphabet]
    peaks = posteriors.max(0)
    shown = sorted(np.argsort(-peaks)[:max(2, int((peaks > 0.2).sum()))].tolist())
    bottom.imshow(posteriors[:, shown].T, origin="lower", aspect="auto", cmap="Blues",
                  vmin=0, vmax=1, interpolation="nearest")
    bottom.set_yticks(range(len(shown)), [names[k] for k in shown], fontsize=7)
    bottom.set_xlabel("model step")
    bottom.set_ylabel("CTC posterior")
    figure.tight_layout()
    _save(figure, path)
