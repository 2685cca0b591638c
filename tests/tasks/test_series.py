import numpy as np
import pandas as pd
import pytest

from lstmkit.tasks import series


def _write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_sorted_by_time_with_roles(tmp_path):
    path = _write(tmp_path, "day,x,y\n2020-01-03,3,30\n2020-01-01,1,10\n2020-01-02,2,20\n")
    data = series.load_file(path, None, past=("x",))
    assert data.targets == ("y",) and data.past_covariates == ("x",)
    assert data.frame["y"].tolist() == [10, 20, 30]
    assert isinstance(data.frame.index, pd.DatetimeIndex)


def test_missing_values_by_policy(tmp_path):
    path = _write(tmp_path, "t,y\n1,1\n2,\n3,3\n4,4\n")
    filled = series.load_file(path, "t", missing="interpolate")
    assert filled.frame["y"].tolist() == [1, 2, 3, 4] and "filled 1" in filled.notes[0]
    dropped = series.load_file(path, "t", missing="drop")
    assert dropped.frame["y"].tolist() == [1, 3, 4] and "dropped 1" in dropped.notes[0]
    with pytest.raises(ValueError, match="expected no missing values"):
        series.load_file(path, "t", missing="refuse")


@pytest.mark.parametrize("missing", ["interpolate", "drop"])
def test_edges_are_never_invented(tmp_path, missing):
    # Filling the ends used to extrapolate a flat edge: forecasts read fabricated data and
    # the backtest scored against invented actuals.
    path = _write(tmp_path, "t,y\n1,\n2,2\n3,\n4,4\n5,\n6,\n")
    data = series.load_file(path, "t", missing=missing)
    assert data.frame.index.tolist() == [2, 3, 4][::1 if missing == "interpolate" else 2]
    assert not data.frame["y"].isna().any()
    assert any("trailing" in n and "never filled" in n for n in data.notes)
    assert any("1 leading" in n for n in data.notes)


def test_rows_after_the_last_target_give_the_future_covariates(tmp_path):
    path = _write(tmp_path, "t,y,price\n1,1,5\n2,2,6\n3,,7\n4,,8\n")
    data = series.load_file(path, "t", future=("price",))
    assert data.frame["y"].tolist() == [1, 2]
    assert data.ahead["price"].tolist() == [7, 8]


@pytest.mark.parametrize("text", ["n/a", "NA", "-"])
def test_na_text_is_an_error_not_a_missing_value(tmp_path, text):
    path = _write(tmp_path, f"t,y\n1,1\n2,{text}\n3,3\n")
    with pytest.raises(ValueError, match=f"expected numbers, got '{text}' at row 2"):
        series.load_file(path, "t")


def test_irregular_dates_are_refused_unless_a_frequency_is_given(tmp_path):
    path = _write(tmp_path, "d,y\n2020-01-01,1\n2020-02-01,2\n2020-04-01,4\n2020-05-01,5\n")
    with pytest.raises(ValueError, match="irregular steps.*--freq"):
        series.load_file(path, "d")
    data = series.load_file(path, "d", freq="MS")
    assert data.frame["y"].tolist() == [1, 2, 3, 4, 5] and data.season == 12
    with pytest.raises(ValueError, match="expected dates on the MS grid"):
        series.load_file(_write(tmp_path, "d,y\n2020-01-01,1\n2020-02-03,2\n", "o.csv"),
                         "d", freq="MS")


def test_ambiguous_day_first_dates_need_a_format(tmp_path):
    path = _write(tmp_path, "d,y\n01/02/2020,1\n01/03/2020,2\n01/04/2020,3\n")
    with pytest.raises(ValueError, match="day-first and month-first.*--time-format"):
        series.load_file(path, "d")
    data = series.load_file(path, "d", time_format="%d/%m/%Y")
    assert [t.month for t in data.frame.index] == [2, 3, 4] and data.freq == "MS"
    # readable one way only (a day above 12): no ambiguity, no format needed
    one_way = _write(tmp_path, "d,y\n13/01/2020,1\n14/01/2020,2\n15/01/2020,3\n", "u.csv")
    assert series.load_file(one_way, "d").frame.index[0].day == 13


def test_one_rule_for_the_season(tmp_path):
    monthly = _write(tmp_path, "d,y\n" + "".join(f"2020-{m:02d}-01,{m}\n" for m in range(1, 13)))
    assert series.load_file(monthly, "d").season == 12
    assert series.load_file(monthly, "d", season=6).season == 6
    steps = _write(tmp_path, "t,y\n1,1\n2,2\n3,3\n", "n.csv")
    assert series.load_file(steps, "t").season == 1
    assert [series.season_of(f) for f in ("MS", "QS", "W", "D", "h", "YS")] == [12, 4, 52, 7,
                                                                                24, 1]


def test_text_in_a_numeric_column_is_refused(tmp_path):
    path = _write(tmp_path, "t,y\n1,1\n2,abc\n3,3\n")
    with pytest.raises(ValueError, match="column 'y': expected numbers, got 'abc' at row 2"):
        series.load_file(path, "t")


def test_absent_columns_and_files(tmp_path):
    path = _write(tmp_path, "t,y\n1,1\n")
    with pytest.raises(ValueError, match="expected 'z' among the columns"):
        series.load_file(path, "t", targets=("z",))
    with pytest.raises(ValueError, match="--time-column: expected 'when'"):
        series.load_file(path, "when")
    with pytest.raises(FileNotFoundError, match="no such file"):
        series.load_file(tmp_path / "absent.csv", None)
    with pytest.raises(ValueError, match="expected a .csv or .parquet"):
        series.load_file(_write(tmp_path, "x", "s.txt"), None)
    with pytest.raises(ValueError, match="repeated times"):
        series.load_file(_write(tmp_path, "t,y\n1,1\n1,2\n", "d.csv"), "t")


def test_parquet(tmp_path):
    frame = pd.DataFrame({"t": pd.date_range("2020", periods=5, freq="D"), "y": np.arange(5.0)})
    frame.to_parquet(tmp_path / "s.parquet")
    assert series.load_file(tmp_path / "s.parquet", "t").frame["y"].tolist() == list(range(5))


def test_bundled_datasets_load_offline():
    airline = series.load_dataset("airline")
    assert len(airline.frame) == 144 and airline.season == 12
    co2 = series.load_dataset("co2")
    assert not co2.frame.isna().any().any() and co2.notes
    with pytest.raises(ValueError, match="expected one of"):
        series.load_dataset("nope")
