import numpy as np
import pandas as pd
import pytest

import lstmkit
from lstmkit.apps import forecast
from lstmkit.apps.forecast import ForecastConfig
from lstmkit.apps.model_options import ModelOptions


def _csv(path, n=90, trend=0.1, jump=0.0, period=6, extra=False):
    t = np.arange(n)
    y = 10 + trend * t + np.sin(2 * np.pi * t / period)
    y[n - 20:] += jump
    frame = pd.DataFrame({"date": pd.date_range("2000-01-01", periods=n, freq="MS"), "y": y})
    if extra:
        frame["past"] = np.cos(t)
        frame["future"] = (t % 3 == 0).astype(float)
    frame.to_csv(path, index=False)
    return path


def _config(tmp_path, data, **kw):
    return ForecastConfig(**{"data": str(data), "horizon": 4, "season": 6, "epochs": 3,
                             "model": ModelOptions(hidden_size=8), "progress": False,
                             "out": str(tmp_path / "run"), **kw})


def test_tiny_run_writes_everything(tmp_path):
    report = forecast.train(_config(tmp_path, _csv(tmp_path / "s.csv")))
    assert set(report["metrics"]["y"]) == {"lstm", "naive", "seasonal_naive", "mean", "ets"}
    for path in report["files"].values():
        assert (tmp_path / "run").joinpath(path.split("/")[-1]).stat().st_size > 0
    table = pd.read_csv(tmp_path / "run" / "forecast.csv")
    assert (table["kind"] == "backtest").sum() == 3 * 4 and (table["kind"] == "future").sum() == 4
    assert table["time"].iloc[-1] == "2007-10-01"  # 90 months from 2000-01, then 4 more
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.meta["app"] == "forecast" and model.config.pooling == "last"


def test_scaling_is_fitted_on_training_rows_and_undone(tmp_path):
    data = _csv(tmp_path / "s.csv", jump=100.0)  # the backtest rows jump far away
    report = forecast.train(_config(tmp_path, data))
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    values = pd.read_csv(data)["y"].to_numpy()
    first = model.meta["first_origin"]
    assert first == 90 - 4 - 2 * 4
    assert model.meta["scaler"]["mean"] == pytest.approx([values[:first].mean()])
    assert model.meta["scaler"]["std"] == pytest.approx([values[:first].std()])
    table = pd.read_csv(tmp_path / "run" / "forecast.csv").query("kind == 'backtest'")
    np.testing.assert_allclose(table["actual"], values[table["step"].index.map(
        lambda i: first + 4 * (i // 4) + i % 4)])
    # the reported errors are those of the written forecasts, in the data's units
    assert report["metrics"]["y"]["lstm"]["mae"] == pytest.approx(
        np.abs(table["actual"] - table["q0.5"]).mean())
    assert report["metrics"]["y"]["naive"]["mae"] == pytest.approx(
        np.abs(table["actual"] - table["naive"]).mean())


def test_beats_seasonal_naive_on_a_trending_season(tmp_path):
    report = forecast.train(_config(tmp_path, _csv(tmp_path / "s.csv"), epochs=60,
                                    model=ModelOptions(hidden_size=16), origins=4))
    scores = report["metrics"]["y"]
    assert scores["lstm"]["mase"] < scores["seasonal_naive"]["mase"]


def test_covariates_and_what_predict_needs(tmp_path):
    data = _csv(tmp_path / "s.csv", extra=True)
    config = _config(tmp_path, data, target="y", past_covariates="past",
                     future_covariates="future")
    report = forecast.train(config)
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.meta["columns"] == {"targets": ["y"], "past": ["past"], "future": ["future"]}
    assert model.config.layer.cell.input_size == 4  # y, past, future, observed flag
    assert "lstm" in report["metrics"]["y"]
    with pytest.raises(ValueError, match="future covariates"):
        forecast.predict(model, config)


def test_evaluate_and_predict_from_the_checkpoint(tmp_path):
    config = _config(tmp_path, _csv(tmp_path / "s.csv"))
    report = forecast.train(config)
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    again = forecast.evaluate(model, config)
    for name, row in report["metrics"]["y"].items():
        assert again["metrics"]["y"][name] == pytest.approx(row)
    ahead = forecast.predict(model, config)
    assert list(ahead["step"]) == [1, 2, 3, 4] and ahead["q0.5"].notna().all()


def test_series_too_short_says_what_it_needs(tmp_path):
    with pytest.raises(ValueError, match="series too short: 30 points"):
        forecast.train(_config(tmp_path, _csv(tmp_path / "s.csv", n=30)))


def test_config_checks():
    with pytest.raises(ValueError, match="including 0.5"):
        ForecastConfig(quantiles="0.1,0.9")
    with pytest.raises(ValueError, match="expected only with --data"):
        forecast.load_series(ForecastConfig(target="x"))
