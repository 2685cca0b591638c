"""Time series for forecasting: the datasets bundled with statsmodels and sktime, and CSV or
Parquet files with a time column.

Every series comes out the same way: a :class:`Series` whose frame is indexed by time, with
numeric columns only, sorted, and missing values handled by an explicit policy:

- ``interpolate`` (default): filled linearly along the rows, the ends with the nearest value;
- ``drop``: rows with a missing value are removed (the spacing in time becomes uneven);
- ``refuse``: any missing value is an error.

Text in a numeric column (a typo, a unit, "n/a") is always an error: it is not a missing value.
Nothing here downloads; the bundled datasets are files inside the installed packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lstmkit._optional import require

MISSING_POLICIES = ("interpolate", "drop", "refuse")


@dataclass(frozen=True)
class Series:
    """A cleaned multivariate series and the roles of its columns."""

    name: str
    frame: object
    """pandas DataFrame indexed by time, numeric columns only."""
    targets: tuple[str, ...]
    """Columns to forecast."""
    past_covariates: tuple[str, ...] = ()
    """Columns known only up to the forecast origin."""
    future_covariates: tuple[str, ...] = ()
    """Columns known over the forecast horizon as well (calendar, planned prices)."""
    season: int = 1
    """Period of the seasonality (1: none), used by seasonal naive and MASE."""
    horizon: int = 12
    """The horizon this dataset is usually forecast at."""
    notes: tuple[str, ...] = field(default=())
    """What cleaning did, for the user to read."""
    base: str = "none"
    """The forecaster's default base (see ``lstmkit.apps.windows``): "seasonal" for a fixed
    calendar season, "none" otherwise."""

    @property
    def columns(self) -> tuple[str, ...]:
        return self.targets + self.past_covariates + self.future_covariates


@dataclass(frozen=True)
class _Bundled:
    load: Callable
    targets: tuple[str, ...]
    past: tuple[str, ...] = ()
    season: int = 1
    horizon: int = 12
    about: str = ""
    base: str = "none"


def _sktime(name: str):
    return getattr(require("sktime.datasets", "apps", "bundled datasets"), name)()


def _statsmodels(name: str):
    module = require(f"statsmodels.datasets.{name}", "apps", "bundled datasets")
    return module.load_pandas().data


def _airline():
    series = _sktime("load_airline")
    return series.rename("passengers").to_frame().set_axis(series.index.to_timestamp())


def _lynx():
    series = _sktime("load_lynx")
    return series.rename("trappings").to_frame().set_axis(series.index.to_timestamp())


def _uschange():
    pd = require("pandas", "apps", "forecasting")
    y, x = _sktime("load_uschange")
    frame = x.assign(Consumption=y)[["Consumption", *x.columns]]
    return frame.set_axis(pd.period_range("1970Q1", periods=len(frame), freq="Q").to_timestamp())


def _yearly(name: str, year: str):
    pd = require("pandas", "apps", "forecasting")
    frame = _statsmodels(name)
    index = pd.PeriodIndex(frame.pop(year).astype(int), freq="Y").to_timestamp()
    return frame.set_axis(index)


def _elec_equip():
    frame = _statsmodels("elec_equip")
    return frame.set_axis(["orders"], axis=1)


def _macrodata():
    pd = require("pandas", "apps", "forecasting")
    frame = _statsmodels("macrodata")
    quarters = [f"{int(y)}Q{int(q)}" for y, q in zip(frame.pop("year"), frame.pop("quarter"))]
    return frame.set_axis(pd.PeriodIndex(quarters, freq="Q").to_timestamp())


DATASETS: dict[str, _Bundled] = {
    "airline": _Bundled(_airline, ("passengers",), season=12, horizon=12, base="seasonal",
                        about="monthly airline passengers 1949-1960 (sktime), 144 points"),
    "co2": _Bundled(lambda: _statsmodels("co2"), ("co2",), season=52, horizon=52,
                    about="weekly CO2 at Mauna Loa 1958-2001 (statsmodels), 2,284 points, "
                          "59 missing"),
    "sunspots": _Bundled(lambda: _yearly("sunspots", "YEAR"), ("SUNACTIVITY",), season=11,
                         horizon=11, about="yearly sunspot activity 1700-2008 (statsmodels), "
                                           "309 points, an 11-year cycle of varying length"),
    "nile": _Bundled(lambda: _yearly("nile", "year"), ("volume",), season=1, horizon=10,
                     about="yearly Nile flow 1871-1970 (statsmodels), 100 points"),
    "elec_equip": _Bundled(_elec_equip, ("orders",), season=12, horizon=12, base="seasonal",
                           about="monthly euro-area electrical equipment orders 1995-2016 "
                                 "(statsmodels), 257 points"),
    "macrodata": _Bundled(_macrodata, ("realgdp", "realcons", "realinv"),
                          past=("unemp", "tbilrate", "infl"), season=1, horizon=8,
                          about="US quarterly macro data 1959-2009 (statsmodels), 203 points; "
                                "three targets, three past covariates"),
    "lynx": _Bundled(_lynx, ("trappings",), season=10, horizon=10,
                     about="yearly Canadian lynx trappings 1821-1934 (sktime), 114 points, "
                           "a cycle of about 10 years"),
    "uschange": _Bundled(_uschange, ("Consumption",),
                         past=("Income", "Production", "Savings", "Unemployment"), season=1,
                         horizon=8, about="US quarterly growth rates 1970-2016 (sktime), 187 "
                                          "points; consumption with four past covariates"),
}
"""Bundled datasets: name -> loader and the roles of its columns. The seasonal base is the
default only for the monthly calendar seasons; the natural cycles of sunspots and lynx vary in
length, and 52 weeks drift against the year in co2 (docs/applications.md has both settings)."""


def load_dataset(name: str, missing: str = "interpolate") -> Series:
    """The bundled dataset ``name``, cleaned with the ``missing`` policy."""
    if name not in DATASETS:
        raise ValueError(f"--dataset: expected one of {sorted(DATASETS)}, got {name!r}")
    spec = DATASETS[name]
    frame, notes = clean(spec.load(), spec.targets + spec.past, missing)
    return Series(name, frame, spec.targets, spec.past, (), spec.season, spec.horizon, notes,
                  spec.base)


def load_file(path: str | Path, time_column: str | None, targets: tuple[str, ...] = (),
              past: tuple[str, ...] = (), future: tuple[str, ...] = (),
              missing: str = "interpolate", season: int = 1, horizon: int = 12) -> Series:
    """A series from a CSV or Parquet file with a time column (default: the first column).

    Targets default to every column that is not the time or a covariate.
    """
    frame = read_table(path)
    time_column = frame.columns[0] if time_column is None else time_column
    _require_columns(frame, [time_column], path, "--time-column")
    frame = frame.set_index(_parse_time(frame[time_column], time_column))
    frame = frame.drop(columns=[time_column]).sort_index()
    if frame.index.has_duplicates:
        raise ValueError(f"{path}: expected one row per time, got repeated times in "
                         f"{time_column!r}")
    targets = targets or tuple(c for c in frame.columns if c not in past + future)
    if not targets:
        raise ValueError(f"{path}: expected at least one target column, got none")
    _require_columns(frame, [*targets, *past, *future], path, "column")
    frame, notes = clean(frame[[*targets, *past, *future]], targets + past + future, missing)
    return Series(Path(path).stem, frame, tuple(targets), tuple(past), tuple(future), season,
                  horizon, notes)


def read_table(path: str | Path):
    """A DataFrame from a ``.csv`` or ``.parquet`` file."""
    pd = require("pandas", "apps", "forecasting")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise ValueError(f"--data: expected a CSV table in {path}, got an unreadable file "
                             f"({str(error).splitlines()[0]})") from None
    if suffix in (".parquet", ".pq"):
        require("pyarrow", "apps", "reading Parquet files")
        try:
            return pd.read_parquet(path)
        except Exception as error:  # pyarrow raises its own types for a damaged file
            raise ValueError(f"--data: expected a Parquet file in {path}, got an unreadable "
                             f"one ({str(error).splitlines()[0]})") from None
    raise ValueError(f"--data: expected a .csv or .parquet file, got {path.name!r}")


def clean(frame, columns, missing: str):
    """``frame[columns]`` as floats with missing values handled; returns (frame, notes)."""
    pd = require("pandas", "apps", "forecasting")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"--missing: expected one of {MISSING_POLICIES}, got {missing!r}")
    frame = frame[list(columns)].copy()
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            where = bad.to_numpy().nonzero()[0][0]
            raise ValueError(f"column {column!r}: expected numbers, got "
                             f"{frame[column].iloc[where]!r} at row {where + 1}")
        frame[column] = values.astype(float)
    gaps = int(frame.isna().sum().sum())
    if not gaps:
        return frame, ()
    if missing == "refuse":
        column = frame.columns[frame.isna().any()][0]
        raise ValueError(f"column {column!r}: expected no missing values with --missing "
                         f"refuse, got {gaps} in all; use --missing interpolate or drop")
    if missing == "drop":
        kept = frame.dropna()
        return kept, (f"dropped {len(frame) - len(kept)} rows with missing values",)
    filled = frame.interpolate(method="linear", limit_direction="both")
    return filled, (f"filled {gaps} missing values by linear interpolation",)


def _require_columns(frame, names, path, what: str) -> None:
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise ValueError(f"{what}: expected {absent[0]!r} among the columns of {path}, got "
                         f"{list(map(str, frame.columns))}")


def _parse_time(column, name: str):
    pd = require("pandas", "apps", "forecasting")
    if pd.api.types.is_numeric_dtype(column):
        return pd.Index(column.to_numpy(), name=name)  # years or step numbers
    try:
        return pd.DatetimeIndex(pd.to_datetime(column), name=name)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--time-column: expected dates or numbers in {name!r}, got values "
                         f"that are neither ({str(error).splitlines()[0]})") from None
