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
    assert model.config.pooling == "none"  # one answer per horizon step, at that step
    with pytest.raises(ValueError, match=r"future covariates \['future'\] for the 4 steps"):
        forecast.predict(model, config)


def _sales(path, n=120, ahead=0, seed=0):
    """Sales driven by a random price: only a forecaster that reads the price can do well."""
    rng = np.random.default_rng(seed)
    price = rng.choice([1.0, 2.0, 3.0], n + ahead)
    sales = 20 - 5 * price + 0.1 * rng.standard_normal(n + ahead)
    sales[n:] = np.nan
    pd.DataFrame({"t": np.arange(n + ahead), "sales": sales, "price": price}).to_csv(
        path, index=False)
    return path


def test_future_covariates_help_the_backtest_and_forecast_ahead(tmp_path):
    data = _sales(tmp_path / "s.csv", ahead=4)
    common = {"data": str(data), "time_column": "t", "target": "sales", "horizon": 4,
              "context": 8, "epochs": 40, "model": ModelOptions(hidden_size=16), "progress": False,
              "origins": 4}
    blind = forecast.train(ForecastConfig(**common, out=str(tmp_path / "blind")))
    seeing = forecast.train(ForecastConfig(**common, future_covariates="price",
                                           out=str(tmp_path / "seeing")))
    # Before the fix (answer read H zero steps after the covariates) it scored worse with the
    # price than without; here reading the price must roughly halve the error at least.
    assert seeing["metrics"]["sales"]["lstm"]["mase"] < 0.5 * blind["metrics"]["sales"][
        "lstm"]["mase"]
    model = lstmkit.load(tmp_path / "seeing" / "model.safetensors")
    ahead = forecast.predict(model, ForecastConfig(**common, future_covariates="price"))
    assert list(ahead["step"]) == [1, 2, 3, 4] and ahead["time"].tolist() == [120, 121, 122, 123]
    price = pd.read_csv(data)["price"].to_numpy()[120:]
    np.testing.assert_allclose(ahead["q0.5"], 20 - 5 * price, atol=2.0)


def test_seasonal_base_needs_a_season(tmp_path):
    path = tmp_path / "steps.csv"
    pd.DataFrame({"t": np.arange(60), "y": np.sin(np.arange(60))}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="expected a season > 1 for 'seasonal'"):
        forecast.train(_config(tmp_path, path, season=None, base="seasonal"))


def test_few_validation_windows_keep_early_stopping_and_cap_the_epochs(tmp_path):
    report = forecast.train(_config(tmp_path, _csv(tmp_path / "s.csv"), epochs=30, patience=2))
    training = report["training"]
    assert training["val_windows"] < forecast.FEW_VAL_WINDOWS
    assert training["epochs"] <= 2 and any("at most 2 epochs" in n for n in report["notes"])


def test_intervals_are_calibrated_on_the_held_out_windows(tmp_path):
    forecast.train(_config(tmp_path, _csv(tmp_path / "s.csv"), epochs=2))
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    offsets = np.asarray(model.meta["conformal"])
    assert offsets.shape == (4, 1, 1)  # horizon, targets, quantile pairs


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


def test_refit_backtest_trains_a_model_at_each_origin(tmp_path):
    data = _csv(tmp_path / "s.csv")
    report = forecast.train(_config(tmp_path, data, refit=True, origins=2))
    assert report["training"]["refit"] == 2 and any("refit" in n for n in report["notes"])
    first = lstmkit.load(tmp_path / "run" / "origin-0")
    last = lstmkit.load(tmp_path / "run")
    rows = report["origin_rows"]
    assert first.meta["first_origin"] == rows[0] and last.meta["first_origin"] == rows[1]
    series = forecast.load_series(_config(tmp_path, data))
    for model, k in ((first, 0), (last, 1)):
        alone = forecast.model_forecast(model, series, np.array([rows[k]]))[0]
        np.testing.assert_array_equal(report["forecasts"]["lstm"][k], alone)
    plain = forecast.train(_config(tmp_path, data, origins=2, out=str(tmp_path / "plain")))
    assert plain["origin_rows"] == rows
    assert not np.array_equal(plain["forecasts"]["lstm"][1], report["forecasts"]["lstm"][1])
