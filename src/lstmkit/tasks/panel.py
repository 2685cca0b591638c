"""Many series at once (a panel), for a global forecaster: long-format tables with an id column.

A long-format table has one row per (id, time): an id column, a time column, a target, and any
number of covariates in three roles:

- **static**: constant within a series (a category, a size); text is one-hot encoded, numbers are
  used as they are;
- **past**: known up to the forecast origin only;
- **future**: known ahead as well (calendar, planned prices). Rows after a series' last target
  value that carry future covariates are the future values ``predict`` forecasts with.

Missing targets: interior gaps are interpolated linearly (``missing="interpolate"``), refused
(``"refuse"``); leading ones are dropped; trailing ones are never filled: they mark the future.
Text in a numeric column (a typo, "n/a") is an error; only an empty cell is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lstmkit._optional import require
from lstmkit.tasks import series as series_data


@dataclass(frozen=True)
class Panel:
    """A set of univariate series and their covariates, aligned per series."""

    name: str
    ids: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    """The observed target of each series, (n_i,), no missing values."""
    season: int
    horizon: int
    past: tuple[np.ndarray, ...] = ()
    """Per series (n_i, P) past covariates; empty tuple without any."""
    future: tuple[np.ndarray, ...] = ()
    """Per series (n_i + a_i, F) future covariates, a_i >= 0 rows past the last target."""
    static: np.ndarray | None = None
    """(N, S) static covariates as numbers (one-hot for text)."""
    static_names: tuple[str, ...] = ()
    phase: tuple[int, ...] | None = None
    """Position in the season of each series' first point (None: unknown, no calendar)."""
    times: tuple | None = None
    """Per series, its time index (pandas), for dating forecasts; None for competitions."""
    freq: str | None = None
    past_names: tuple[str, ...] = ()
    future_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.values:
            raise ValueError(f"{self.name}: expected at least one series, got none")
        for name in ("season", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")

    def __len__(self) -> int:
        return len(self.values)

    def lengths(self) -> np.ndarray:
        return np.array([len(v) for v in self.values])

    def cut(self, drop: int) -> Panel:
        """The panel without the last ``drop`` points of every series (future covariates kept
        for the dropped rows: they become the horizon's known values)."""
        if drop == 0:
            return self
        short = [i for i, v in enumerate(self.values) if len(v) <= drop]
        if short:
            raise ValueError(f"series {self.ids[short[0]]!r}: expected more than {drop} points "
                             f"to hold out, got {len(self.values[short[0]])}")
        past = tuple(p[:-drop] for p in self.past)
        times = None if self.times is None else tuple(t[:-drop] for t in self.times)
        return Panel(self.name, self.ids, tuple(v[:-drop] for v in self.values), self.season,
                     self.horizon, past, self.future, self.static, self.static_names,
                     self.phase, times, self.freq, self.past_names, self.future_names,
                     self.notes)


def from_frame(frame, id_column: str, time_column: str, target: str, static=(), past=(),
               future=(), season: int | None = None, horizon: int = 12,
               missing: str = "interpolate", freq: str | None = None,
               time_format: str | None = None, name: str = "panel") -> Panel:
    """A panel from a long-format pandas DataFrame (one row per id and time)."""
    pd = require("pandas", "apps", "forecasting")
    columns = [id_column, time_column, target, *static, *past, *future]
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"{name}: expected a column {absent[0]!r}, got "
                         f"{list(map(str, frame.columns))}")
    frame = frame[columns].copy()
    frame[id_column] = frame[id_column].astype(str)
    for column in (target, *past, *future):
        frame[column] = series_data.to_numbers(frame[column], column)
    index = series_data.parse_time(frame[time_column], time_column, time_format)
    frame = frame.assign(**{time_column: index}).sort_values([id_column, time_column])
    if frame.duplicated([id_column, time_column]).any():
        row = frame[frame.duplicated([id_column, time_column])].iloc[0]
        raise ValueError(f"{name}: expected one row per id and time, got {row[time_column]} "
                         f"twice for id {row[id_column]!r}")
    freq = freq or _common_freq(frame, id_column, time_column)
    season = season or series_data.season_of(freq)
    ids, values, pasts, futures, times, phases, notes = [], [], [], [], [], [], []
    for key, rows in frame.groupby(id_column, sort=True):
        rows = _regular(rows.set_index(time_column), freq, key, pd)
        observed = rows[target].notna().to_numpy()
        if not observed.any():
            raise ValueError(f"series {key!r}: expected at least one target value, got none")
        first, last = observed.argmax(), len(observed) - observed[::-1].argmax()
        y = rows[target].iloc[first:last]
        if y.isna().any():
            if missing == "refuse":
                raise ValueError(f"series {key!r}: expected no missing target inside the "
                                 f"series, got {int(y.isna().sum())}")
            notes.append(f"{key}: filled {int(y.isna().sum())} interior gaps linearly")
            y = y.interpolate(method="linear", limit_area="inside")
        ids.append(key)
        values.append(y.to_numpy(float))
        times.append(rows.index[first:last])
        phases.append(series_data.phase_of(rows.index[first], freq, season))
        if past:
            pasts.append(_filled(rows[list(past)].iloc[first:last], key, "past"))
        if future:
            futures.append(_filled(rows[list(future)].iloc[first:], key, "future"))
    statics, static_names = _static(frame, id_column, static, ids)
    return Panel(name, tuple(ids), tuple(values), int(season), int(horizon), tuple(pasts),
                 tuple(futures), statics, static_names,
                 None if None in phases else tuple(phases), tuple(times), freq, tuple(past),
                 tuple(future), tuple(notes))


def load_long(path, id_column: str, time_column: str | None, target: str | None, **kwargs
              ) -> Panel:
    """A panel from a long-format CSV or Parquet file (see :func:`from_frame`)."""
    from pathlib import Path

    frame = series_data.read_table(path)
    time_column = time_column or next(c for c in frame.columns if c != id_column)
    roles = {id_column, time_column, *kwargs.get("static", ()), *kwargs.get("past", ()),
             *kwargs.get("future", ())}
    if target is None:
        rest = [c for c in frame.columns if c not in roles]
        if len(rest) != 1:
            raise ValueError(f"{path}: expected one target column besides the id, time and "
                             f"covariates, got {rest}; name it with target")
        target = rest[0]
    return from_frame(frame, id_column, time_column, target, name=Path(path).stem, **kwargs)


def _common_freq(frame, id_column, time_column) -> str | None:
    """The frequency every series follows, or an error naming the first that breaks it."""
    pd = require("pandas", "apps", "forecasting")
    if not pd.api.types.is_datetime64_any_dtype(frame[time_column]):
        return None  # step numbers: regular when consecutive, checked per series
    found = None
    for key, rows in frame.groupby(id_column, sort=True):
        freq = series_data.infer_freq(pd.DatetimeIndex(rows[time_column]), f"series {key!r}")
        if found is None:
            found = freq
        elif freq != found:
            raise ValueError(f"series {key!r}: expected the frequency {found} of the other "
                             f"series, got {freq}; give the frequency (freq)")
    return found


def _regular(rows, freq, key, pd):
    """``rows`` on a regular time grid: refuses times off it, adds empty rows for gaps."""
    index = rows.index
    if isinstance(index, pd.DatetimeIndex):
        grid = pd.date_range(index[0], index[-1], freq=freq)
    else:
        grid = pd.Index(np.arange(index[0], index[-1] + 1), name=index.name)
    off = index.difference(grid)
    if len(off):
        raise ValueError(f"series {key!r}: expected times on a regular {freq or 'step'} grid, "
                         f"got {off[0]}")
    return rows.reindex(grid)


def _filled(block, key, role: str) -> np.ndarray:
    if block.isna().any().any():
        column = block.columns[block.isna().any()][0]
        raise ValueError(f"series {key!r}: expected no missing {role} covariate values, got "
                         f"some in {column!r}")
    return block.to_numpy(float)


def _static(frame, id_column, static, ids):
    pd = require("pandas", "apps", "forecasting")
    if not static:
        return None, ()
    grouped = frame.groupby(id_column, sort=True)[list(static)]
    varying = (grouped.nunique(dropna=False) > 1).any()
    if varying.any():
        raise ValueError(f"static covariate {varying.idxmax()!r}: expected one value per "
                         f"series, got several")
    table = grouped.first().loc[list(ids)]
    encoded = pd.get_dummies(table, dtype=float)
    return encoded.to_numpy(float), tuple(map(str, encoded.columns))
