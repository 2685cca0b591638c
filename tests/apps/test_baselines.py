import numpy as np

from lstmkit.apps import baselines


def test_naive_and_seasonal_naive_repeat_the_past():
    history = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0])
    assert baselines.naive(history, 3).tolist() == [40.0] * 3
    assert baselines.seasonal_naive(history, 5, season=3).tolist() == [20, 30, 40, 20, 30]
    assert baselines.mean(history, 2).tolist() == [history.mean()] * 2


def test_ets_follows_a_trend_and_season():
    t = np.arange(60)
    history = 10 + 0.5 * t + 3 * np.sin(2 * np.pi * t / 12)
    truth = 10 + 0.5 * (t[-1] + 1 + np.arange(12)) + 3 * np.sin(2 * np.pi * (60 + np.arange(12))
                                                                    / 12)
    forecast = baselines.ets(history, 12, season=12)
    assert forecast is not None and np.abs(forecast - truth).max() < 1.0
    assert np.abs(baselines.seasonal_naive(history, 12, 12) - truth).max() > 5.0


def test_summary_features_and_classifiers():
    rng = np.random.default_rng(0)
    make = lambda shift, n: [rng.normal(shift, 1, (rng.integers(5, 9), 2)) for _ in range(n)]  # noqa
    train, test = make(0, 10) + make(3, 10), make(0, 5) + make(3, 5)
    assert baselines.summary_features(train).shape == (20, 7 * 2 + 1)
    labels = np.array([0] * 10 + [1] * 10)
    for predicted in baselines.classify_baselines(train, labels, test).values():
        assert (predicted == np.array([0] * 5 + [1] * 5)).mean() >= 0.9


def test_statsforecast_on_processes_equals_one_process_and_a_budget_gives_up():
    models = baselines.statsforecast_methods(["autoets"], 4)["autoets"]
    rng = np.random.default_rng(0)
    histories = [10 + np.sin(np.arange(n) * np.pi / 2) + 0.1 * rng.standard_normal(n)
                 for n in (20, 24, 28)]
    alone = baselines.statsforecast_many(models, histories, 4)
    assert all(f.shape == (4,) and np.all(np.isfinite(f)) for f in alone)
    pooled = baselines.statsforecast_many(models, histories, 4, jobs=2)
    for a, b in zip(alone, pooled):
        np.testing.assert_array_equal(a, b)  # each series is fitted alone either way
    late = baselines.statsforecast_many(models, histories, 4, budget=1e-9)
    assert late == [None, None, None]
