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
    path = _write(tmp_path, "t,y\n1,1\n2,\n3,3\n4,\n")
    filled = series.load_file(path, "t", missing="interpolate")
    assert filled.frame["y"].tolist() == [1, 2, 3, 3] and "filled 2" in filled.notes[0]
    dropped = series.load_file(path, "t", missing="drop")
    assert dropped.frame["y"].tolist() == [1, 3] and "dropped 2" in dropped.notes[0]
    with pytest.raises(ValueError, match="expected no missing values"):
        series.load_file(path, "t", missing="refuse")


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
