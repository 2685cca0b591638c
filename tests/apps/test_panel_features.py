import numpy as np
import pytest

from lstmkit.apps import panel_features as pf


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
    np.testing.assert_allclose(pf.denormalise(labels[2, :2], level[2], "ratio"), y[3:5])
    with pytest.raises(ValueError, match="season in"):
        _spec(season=1)
    with pytest.raises(ValueError, match="transform"):
        _spec(transform="sqrt")
