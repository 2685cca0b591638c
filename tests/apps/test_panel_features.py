import numpy as np
import pytest

from lstmkit.apps import panel_features as pf
from lstmkit.apps import smoothing


def _spec(**kw):
    return pf.Spec(**{"context": 6, "horizon": 4, "season": 3, "quantiles": (0.1, 0.5, 0.9),
                      "transform": "log", "base": "seasonal", **kw})


def test_inputs_are_causal_and_labels_are_the_future():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 2, 20)
    spec = _spec()
    x, labels, known, level, base = pf.series_steps(spec, y, None, None, None, 0, 15)
    changed = y.copy()
    changed[10:] *= 3
    x2 = pf.series_steps(spec, changed, None, None, None, 0, 15)[0]
    np.testing.assert_array_equal(x[:10], x2[:10])  # step t reads y up to t only
    assert not np.array_equal(x[10], x2[10])
    t = 7
    np.testing.assert_allclose(level[t], y[t - 2:t + 1].mean())
    np.testing.assert_allclose(labels[t] + base[t], np.log(y[t + 1:t + 5] / level[t]))
    # the seasonal base is the last season repeated, in the same units
    np.testing.assert_allclose(base[t], np.log(y[[t - 2, t - 1, t, t - 2]] / level[t]))
    assert known[10].tolist() == [True, True, True, True] and known[11].tolist()[-1] is False
    back = pf.denormalise(labels[t] + base[t], level[t], "log")
    np.testing.assert_allclose(back, y[t + 1:t + 5])


def test_ratio_for_data_with_zeros_and_bad_specs():
    y = np.array([0.0, 2.0, 4.0, 0.0, 6.0, 8.0, 2.0, 4.0])
    spec = _spec(transform="ratio", base="none")
    _, labels, _, level, _ = pf.series_steps(spec, y, None, None, None, 0, 8)
    np.testing.assert_allclose(pf.denormalise(labels[2, :2], level[2, :2], "ratio"), y[3:5])
    with pytest.raises(ValueError, match="season in"):
        _spec(season=1)
    with pytest.raises(ValueError, match="transform"):
        _spec(transform="sqrt")


def test_a_season_of_zeros_gives_bounded_labels_and_loss():
    # Tourism has series that start with a closed season: after it the level is zero and the
    # ratio y / level - 1 was 1e8, which made the validation loss (and the epoch it picks)
    # the business of a few windows.
    y = np.array([0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 5.0, 6.0, 7.0, 5.0])
    spec = _spec(transform="ratio", base="none")
    x, labels, known, level, _ = pf.series_steps(spec, y, None, None, None, 0, 10)
    assert np.abs(labels).max() == pf.CLIP and np.abs(x).max() <= pf.CLIP
    assert labels[2, 0] == pf.CLIP  # after three zeros, a 5
    np.testing.assert_allclose(pf.denormalise(labels[5], level[5], "ratio"), y[6:10],
                               err_msg="labels inside the bound are unchanged")


def test_es_level_and_season_follow_the_recursion_and_undo_exactly():
    m, season = 4, np.array([0.5, 1.5, 1.2, 0.8])
    y = 10 * season[np.arange(24) % m]  # an exact multiplicative season around a level of 10
    spec = _spec(context=8, season=m, base="none", normalise="es", alpha=0.3, gamma=0.2)
    x, labels, known, scale, _ = pf.series_steps(spec, y, None, None, None, 0, 24)
    assert np.abs(x[:, :8]).max() < 1e-12 and np.abs(labels[:20]).max() < 1e-12
    assert not known[:m - 1].any() and known[m - 1:20].all()  # the first season is read
    # a changing series: the recursion by hand, step by step
    rng = np.random.default_rng(1)
    y = np.exp(rng.normal(0, 0.2, 30)) * (5 + np.arange(30) * 0.3) * season[np.arange(30) % m]
    level, factors, _ = smoothing.smooth(y[None], np.array([30]), m, np.array([0.3]),
                                         np.array([0.2]))
    l_prev, s = y[:m].mean(), list(y[:m] / y[:m].mean())
    for t in range(30):
        l_t = 0.3 * y[t] / s[t] + 0.7 * l_prev
        s.append(0.2 * y[t] / l_t + 0.8 * s[t])
        l_prev = l_t
        assert level[0, 0, t] == pytest.approx(l_t) and factors[0, 0, t + m] == pytest.approx(s[-1])
    x, labels, known, scale, _ = pf.series_steps(spec, y, None, None, None, 0, 30)
    t = 10
    np.testing.assert_allclose(scale[t], level[0, 0, t] * factors[0, 0, [11, 12, 13, 14]])
    np.testing.assert_allclose(pf.denormalise(labels[t], scale[t], "log"), y[11:15])
    changed = y.copy()
    changed[15:] *= 3
    again = pf.series_steps(spec, changed, None, None, None, 0, 30)[0]
    np.testing.assert_array_equal(x[:15], again[:15])  # causal


def test_es_parameters_are_chosen_on_the_data_and_bad_series_refused():
    rng = np.random.default_rng(0)
    walks = [np.exp(np.cumsum(rng.normal(0, 0.1, 60))) for _ in range(5)]
    flat = [np.exp(rng.normal(0, 0.1, 60)) for _ in range(5)]
    assert smoothing.choose(walks, 1)[0] >= 0.7  # a random walk: follow the last value
    assert smoothing.choose(flat, 1)[0] <= 0.1  # noise around a level: average it out
    assert smoothing.choose(flat, 1)[1] == 0.0
    with pytest.raises(ValueError, match="positive targets"):
        smoothing.check([np.array([1.0, 0.0, 2.0])], ["a"], 1)
    with pytest.raises(ValueError, match="positive targets"):
        _spec(transform="ratio", normalise="es")
    with pytest.raises(ValueError, match="normalise"):
        _spec(normalise="ets")
