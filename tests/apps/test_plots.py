"""Every picture the applications draw says what its axes show."""

import numpy as np
import pytest

from lstmkit.apps import forecast, plots
from lstmkit.apps.forecast import ForecastConfig
from lstmkit.apps.model_options import ModelOptions


@pytest.fixture
def figures(monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
    return drawn


def _labelled(figure):
    for axis in figure.axes:
        if axis.get_label() == "<colorbar>":
            assert axis.get_ylabel(), "colorbar without a label"
        else:
            assert axis.get_xlabel() and axis.get_ylabel(), axis.get_title()


def test_confusion_matrix_axes_and_rates(figures, tmp_path):
    """Before: the confusion picture had counts only; rates and a colour scale are new."""
    matrix = np.array([[8, 2], [1, 1]])
    plots.confusion_plot(tmp_path / "c.png", matrix, ["a", "b"], "test")
    (figure,) = figures
    _labelled(figure)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts == ["8\n80%", "2\n20%", "1\n50%", "1\n50%"]


def test_forecast_plot_axes(figures, tmp_path):
    """Before: the forecast picture had no axis labels."""
    t = np.arange(60)
    path = tmp_path / "s.csv"
    path.write_text("time,y\n" + "".join(f"{i},{10 + np.sin(i / 2):.4f}\n" for i in t))
    forecast.train(ForecastConfig(data=str(path), horizon=4, season=6, epochs=1,
                                  model=ModelOptions(hidden_size=4), progress=False,
                                  out=str(tmp_path / "run")))
    assert figures
    for figure in figures:
        _labelled(figure)
