"""Time series for forecasting: the datasets bundled with statsmodels and sktime, and CSV or
Parquet files with a time column.

Every series comes out the same way: a :class:`Series` whose frame is indexed by time, with
numeric columns only, sorted, and missing values handled by an explicit policy:

- ``interpolate`` (default): interior gaps filled linearly along the rows; a gap at either end
  is never filled: leading rows with a missing value are dropped, and so are trailing ones
  (with a note; the forecast starts after the last row where everything is known), because a
  value extrapolated there would be a forecast presented as data;
- ``drop``: rows with a missing value are removed (the spacing in time becomes uneven);
- ``refuse``: any missing value is an error.

Only an empty cell is missing. Text in a numeric column (a typo, a unit, "n/a", "NA") is always
an error, never silently a missing value.

Time: dates must lie on a regular grid (a frequency pandas can infer: monthly, weekly, ...), or
the frequency is given (``freq``), and then the missing steps become missing rows handled by the
policy above. Dates whose day and month could be swapped ("03/04/2020") are refused unless their
format is given (``time_format``, e.g. ``%d/%m/%Y``). The season follows one rule everywhere: the
one given, else the dataset's, else the one of the frequency (12 for monthly, 4 for quarterly,
52 for weekly, 7 for daily, 24 for hourly), else 1.

Nothing here downloads; the bundled datasets are files inside the installed packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    ahead: object = None
    """pandas DataFrame of the future covariates known after the last row (None: none)."""
    freq: str | None = None
    """The time grid's pandas frequency (None: step numbers or a bundled dataset)."""

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
    frame, _, notes = clean(spec.load(), spec.targets + spec.past, missing)
    return Series(name, frame, spec.targets, spec.past, (), spec.season, spec.horizon, notes,
                  spec.base)


def load_file(path: str | Path, time_column: str | None, targets: tuple[str, ...] = (),
              past: tuple[str, ...] = (), future: tuple[str, ...] = (),
              missing: str = "interpolate", season: int | None = None, horizon: int = 12,
              freq: str | None = None, time_format: str | None = None) -> Series:
    """A series from a CSV or Parquet file with a time column (default: the first column).

    Targets default to every column that is not the time or a covariate. Rows after the last
    target value that carry every future covariate are kept apart, in ``Series.ahead``: they are
    the known future that a forecast ahead reads.
    """
    frame = read_table(path)
    time_column = frame.columns[0] if time_column is None else time_column
    _require_columns(frame, [time_column], path, "--time-column")
    frame = frame.set_index(parse_time(frame[time_column], time_column, time_format))
    frame = frame.drop(columns=[time_column]).sort_index()
    if frame.index.has_duplicates:
        raise ValueError(f"{path}: expected one row per time, got repeated times in "
                         f"{time_column!r}")
    targets = targets or tuple(c for c in frame.columns if c not in past + future)
    if not targets:
        raise ValueError(f"{path}: expected at least one target column, got none")
    _require_columns(frame, [*targets, *past, *future], path, "column")
    frame = frame[[*targets, *past, *future]].apply(lambda c: to_numbers(c, c.name))
    frame, freq = regular(frame, freq, time_column)
    season = season or season_of(freq)
    frame, ahead, notes = clean(frame, targets + past + future, missing, targets, future)
    return Series(Path(path).stem, frame, tuple(targets), tuple(past), tuple(future), season,
                  horizon, notes, ahead=ahead, freq=freq)


def split_names(text: str | None) -> tuple[str, ...]:
    """Comma-separated column names as a tuple, blanks dropped."""
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


def read_table(path: str | Path):
    """A DataFrame from a ``.csv`` or ``.parquet`` file."""
    pd = require("pandas", "apps", "forecasting")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            # Only an empty cell is missing: "n/a" or "NA" must reach the number check as text.
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
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


def to_numbers(column, name: str):
    """A column as floats; text that is not a number raises (an empty cell is missing)."""
    pd = require("pandas", "apps", "forecasting")
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        where = bad.to_numpy().nonzero()[0][0]
        raise ValueError(f"column {name!r}: expected numbers, got {column.iloc[where]!r} at "
                         f"row {where + 1}")
    return values.astype(float)


def clean(frame, columns, missing: str, targets=(), future=()):
    """``frame[columns]`` as floats with missing values handled.

    Returns (frame, ahead, notes): ``ahead`` holds the rows after the last complete row that
    still carry every future covariate (None when there are none), the known future of a
    forecast; the edges are never filled.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"--missing: expected one of {MISSING_POLICIES}, got {missing!r}")
    frame = frame[list(columns)].copy()
    for column in columns:
        frame[column] = to_numbers(frame[column], column)
    complete = frame.notna().all(axis=1).to_numpy()
    if not complete.any():
        raise ValueError(f"expected at least one row with every column {list(columns)} "
                         f"present, got none")
    first, last = complete.argmax(), len(complete) - complete[::-1].argmax()
    tail, frame, notes = frame.iloc[last:], frame.iloc[first:last], []
    ahead = None
    if future and len(tail) and tail[list(future)].notna().all(axis=1).iloc[0]:
        known = tail[list(future)].notna().all(axis=1).to_numpy()
        ahead = tail[list(future)].iloc[:len(known) if known.all() else known.argmin()]
    if first:
        notes.append(f"dropped {first} leading rows with missing values")
    if len(tail):
        notes.append(f"dropped {len(tail)} trailing rows with missing values (never filled)"
                     + (f"; {len(ahead)} of them give the future covariates ahead"
                        if ahead is not None else ""))
    gaps = int(frame.isna().sum().sum())
    if not gaps:
        return frame, ahead, tuple(notes)
    if missing == "refuse":
        column = frame.columns[frame.isna().any()][0]
        raise ValueError(f"column {column!r}: expected no missing values with --missing "
                         f"refuse, got {gaps} in all; use --missing interpolate or drop")
    if missing == "drop":
        kept = frame.dropna()
        return kept, ahead, (*notes, f"dropped {len(frame) - len(kept)} rows with missing "
                                     f"values")
    filled = frame.interpolate(method="linear", limit_area="inside")
    return filled, ahead, (*notes, f"filled {gaps} interior missing values by linear "
                                   f"interpolation")


def _require_columns(frame, names, path, what: str) -> None:
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise ValueError(f"{what}: expected {absent[0]!r} among the columns of {path}, got "
                         f"{list(map(str, frame.columns))}")


_ISO = r"^\d{4}(-\d{2}(-\d{2}([ T].*)?)?)?$"


def parse_time(column, name: str, time_format: str | None = None):
    """A time index from a column of numbers (years, steps) or dates.

    Dates not in ISO order (year first) are parsed both day-first and month-first; when both
    readings work and differ, the dates are ambiguous and refused unless ``time_format`` says.
    """
    pd = require("pandas", "apps", "forecasting")
    if time_format is None and pd.api.types.is_numeric_dtype(column):
        return pd.Index(column.to_numpy(), name=name)  # years or step numbers
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.DatetimeIndex(column, name=name)
    text = column.astype(str).str.strip()
    try:
        if time_format is not None:
            return pd.DatetimeIndex(pd.to_datetime(text, format=time_format), name=name)
        if text.str.match(_ISO).all():
            return pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601"), name=name)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--time-column: expected dates in {name!r} matching "
                         f"{time_format or 'ISO 8601'}, got values that are not "
                         f"({str(error).splitlines()[0]})") from None
    readings = {}
    for dayfirst in (False, True):
        try:
            readings[dayfirst] = pd.to_datetime(text, dayfirst=dayfirst, format="mixed")
        except (ValueError, TypeError) as error:
            problem = str(error).splitlines()[0]
    if not readings:
        raise ValueError(f"--time-column: expected dates or numbers in {name!r}, got values "
                         f"that are neither ({problem})")
    if len(readings) == 2 and not readings[False].equals(readings[True]):
        raise ValueError(f"--time-column: expected unambiguous dates in {name!r}, got "
                         f"{text.iloc[0]!r}, which reads day-first and month-first alike; "
                         f"give the format (--time-format, e.g. %d/%m/%Y)")
    return pd.DatetimeIndex(next(iter(readings.values())), name=name)


def infer_freq(index, what: str) -> str:
    """The regular frequency of a DatetimeIndex, or an error saying how to give one."""
    pd = require("pandas", "apps", "forecasting")
    freq = pd.infer_freq(index) if len(index) >= 3 else None
    if freq is None:
        steps = pd.Series(index[1:] - index[:-1]).value_counts()
        seen = ", ".join(str(s) for s in steps.index[:3]) or "too few dates"
        raise ValueError(f"{what}: expected dates at a regular frequency, got irregular steps "
                         f"({seen}); give the frequency (--freq, e.g. MS, W, D) and the missing "
                         f"steps become missing values")
    return freq


def regular(frame, freq: str | None, name: str):
    """``frame`` on its regular time grid, and the grid's frequency (None for step numbers).

    Without ``freq`` the dates must already be regular; with it, absent steps become empty
    rows (missing values) and dates off the grid are refused.
    """
    pd = require("pandas", "apps", "forecasting")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        steps = np.diff(index.to_numpy()) if len(index) > 1 else np.ones(1)
        if len(index) > 1 and not np.all(steps == steps[0]):
            raise ValueError(f"--time-column: expected evenly spaced numbers in {name!r}, got "
                             f"steps of {sorted(set(steps.tolist()))[:3]}")
        return frame, None
    if freq is None:
        return frame, infer_freq(index, f"--time-column {name!r}")
    try:
        grid = pd.date_range(index[0], index[-1], freq=freq)
    except ValueError as error:
        raise ValueError(f"--freq: expected a pandas frequency, got {freq!r} "
                         f"({str(error).splitlines()[0]})") from None
    off = index.difference(grid)
    if len(off):
        raise ValueError(f"--time-column: expected dates on the {freq} grid from {index[0]}, "
                         f"got {off[0]}")
    return frame.reindex(grid.rename(index.name)), freq


_SEASONS = {"M": 12, "MS": 12, "ME": 12, "Q": 4, "QS": 4, "QE": 4, "W": 52, "D": 7, "B": 5,
            "h": 24, "H": 24}


def season_of(freq: str | None) -> int:
    """The calendar season of a pandas frequency: 12 for monthly, ... 1 when it has none."""
    if freq is None:
        return 1
    pd = require("pandas", "apps", "forecasting")
    offset = pd.tseries.frequencies.to_offset(freq)
    if offset.n != 1:
        return 1
    return _SEASONS.get(offset.name.split("-")[0], 1)


def phase_of(time, freq: str | None, season: int) -> int | None:
    """Where ``time`` falls in the season (0 .. season-1), or None when unknown."""
    if season == 1:
        return 0
    if freq is None:
        return int(time) % season  # step numbers: step 0 starts a season
    code = freq.split("-")[0].lstrip("0123456789")
    if season == 12 and code in ("M", "MS", "ME"):
        return time.month - 1
    if season == 4 and code in ("Q", "QS", "QE"):
        return time.quarter - 1
    if season == 7 and code == "D":
        return time.dayofweek
    if season == 24 and code in ("h", "H"):
        return time.hour
    if season == 52 and code == "W":
        return min(time.isocalendar()[1], 52) - 1
    return None
