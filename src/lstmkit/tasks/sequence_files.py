"""The user's own sequences, labelled or not, from files or DataFrames. Three layouts:

- **a folder** of one file per sequence, ``.csv`` (a header row, one row per step, one column
  per feature) or ``.npy`` (an array (T, C) or (T,)), with a labels file ``labels.csv`` beside
  them (columns ``file`` and ``label``; ``file`` with or without its extension). For a label per
  step, each CSV has a label column instead.
- **one long table**, ``.csv`` or ``.parquet``: a row per step with a sequence id column, an
  optional time column (rows are sorted by it within each sequence), the feature columns and a
  label column (constant within a sequence, or one per step).
- **an NPZ file** with ``x`` (N, T, C) or (N, T) padded sequences, optional ``lengths`` (N,)
  (default: all T steps), optional ``y`` (N,) labels or (N, T) labels per step, optional
  ``ids`` (N,).

Every reader returns a :class:`SequenceSet`; labels stay as the file gives them (text), the
application maps them to classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstmkit._optional import require


@dataclass(frozen=True)
class Columns:
    """Which columns of a table are not features."""

    id: str = "id"
    time: str = "time"
    label: str = "label"


@dataclass(frozen=True)
class SequenceSet:
    """Sequences of one set, with their labels when the files have them."""

    name: str
    ids: tuple[str, ...]
    sequences: list[np.ndarray]
    """Float arrays (T_i, C)."""
    labels: list | None
    """Per sequence a label (str), or per step an array (T_i,) of labels; None: unlabelled."""
    features: tuple[str, ...]

    @property
    def per_step(self) -> bool:
        return self.labels is not None and isinstance(self.labels[0], np.ndarray)


def read(path: str | Path, columns: Columns = Columns(), labels: str | Path | None = None,
         per_step: bool = False) -> SequenceSet:
    """The sequences at ``path``: a folder, a ``.csv``/``.parquet`` table or an ``.npz`` file."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path, columns, labels, per_step)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file or folder: {path}")
    if labels is not None:
        raise ValueError(f"--labels: expected only with a folder of sequences, got the file "
                         f"{path}")
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    return from_frame(read_table(path), columns, per_step, name=path.stem)


def read_table(path: Path):
    """A DataFrame from a ``.csv`` or ``.parquet`` file, or a one-line error."""
    pd = require("pandas", "apps", "reading tables")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"--data: expected a folder or a .csv, .parquet or .npz file, got "
                         f"{path}")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        require("pyarrow", "apps", "reading Parquet files")
        return pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError) as error:
        raise ValueError(f"--data: expected a table in {path}, got an unreadable file "
                         f"({str(error).splitlines()[0]})") from None


def from_frame(frame, columns: Columns = Columns(), per_step: bool = False,
               name: str = "data") -> SequenceSet:
    """Sequences from a long DataFrame: a row per step, grouped by ``columns.id``."""
    if columns.id not in frame.columns:
        raise ValueError(f"{name}: expected a sequence id column {columns.id!r}, got columns "
                         f"{list(frame.columns)}")
    if columns.time in frame.columns:
        frame = frame.sort_values([columns.id, columns.time], kind="stable")
    features = _features(frame, columns, name)
    labelled = columns.label in frame.columns
    ids, sequences, labels = [], [], []
    for key, part in frame.groupby(columns.id, sort=False):
        ids.append(str(key))
        sequences.append(part[list(features)].to_numpy(float))
        if labelled:
            labels.append(_labels_of(part[columns.label].to_numpy(), str(key), per_step))
    return SequenceSet(name, tuple(ids), sequences, labels if labelled else None, features)


def _features(frame, columns: Columns, name: str) -> tuple[str, ...]:
    features = tuple(c for c in frame.columns if c not in (columns.id, columns.time,
                                                           columns.label))
    if not features:
        raise ValueError(f"{name}: expected at least one feature column besides "
                         f"{columns.id!r}, {columns.time!r} and {columns.label!r}, got none")
    for c in features:
        values = frame[c]
        if values.dtype.kind not in "biuf":
            bad = next(v for v in values if not _is_number(v))
            raise ValueError(f"{name}: expected numbers in feature column {c!r}, got {bad!r}")
        if values.isna().any():
            raise ValueError(f"{name}: expected no missing values, got one in column {c!r} at "
                             f"row {int(np.flatnonzero(values.isna().to_numpy())[0]) + 1}")
    return features


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _labels_of(values: np.ndarray, key: str, per_step: bool):
    text = np.array([str(v) for v in values])
    if per_step:
        return text
    if len(set(text)) > 1:
        raise ValueError(f"label: expected one label per sequence, got {sorted(set(text))[:3]} "
                         f"in sequence {key!r} (a label per step: --labelling step)")
    return str(text[0])


def read_folder(folder: Path, columns: Columns = Columns(), labels: str | Path | None = None,
                per_step: bool = False) -> SequenceSet:
    """One sequence per ``.csv`` or ``.npy`` file of ``folder``, labelled by ``labels`` (None:
    ``folder/labels.csv`` if there is one)."""
    labels_path = Path(labels) if labels is not None else folder / "labels.csv"
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".csv", ".npy") and p != labels_path)
    if not files:
        raise ValueError(f"--data: expected .csv or .npy files in {folder}, got none")
    sequences, step_labels, features = [], [], None
    for path in files:
        seq, names, steps = _read_one(path, columns, per_step)
        if features is None:
            features = names
        if len(names) != len(features):
            raise ValueError(f"{path}: expected {len(features)} features like {files[0].name}, "
                             f"got {len(names)}")
        sequences.append(seq)
        step_labels.append(steps)
    ids = tuple(p.stem for p in files)
    if per_step:
        found = None if any(s is None for s in step_labels) else step_labels
        return SequenceSet(folder.name, ids, sequences, found, features)
    if labels is not None and not labels_path.is_file():
        raise FileNotFoundError(f"--labels: no such file: {labels_path}")
    found = _label_file(labels_path, files) if labels_path.is_file() else None
    return SequenceSet(folder.name, ids, sequences, found, features)


def _read_one(path: Path, columns: Columns, per_step: bool):
    """(sequence (T, C), feature names, labels per step or None) of one file."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: expected a numeric .npy array, got {error}") from None
        array = array[:, None] if array.ndim == 1 else array
        if array.ndim != 2 or array.dtype.kind not in "biuf" or not len(array):
            raise ValueError(f"{path}: expected a numeric array (T, C) or (T,), got "
                             f"{array.dtype} {array.shape}")
        return array.astype(float), tuple(f"x{i}" for i in range(array.shape[1])), None
    frame = read_table(path)
    if frame.empty:
        raise ValueError(f"{path}: expected at least one row, got none")
    features = _features(frame, columns, str(path))
    steps = None
    if columns.label in frame.columns:
        steps = np.array([str(v) for v in frame[columns.label]])
    if per_step and steps is None:
        raise ValueError(f"{path}: expected a label column {columns.label!r} for labels per "
                         f"step, got columns {list(frame.columns)}")
    return frame[list(features)].to_numpy(float), features, steps


def _label_file(path: Path, files: list[Path]) -> list[str]:
    table = read_table(path)
    for column in ("file", "label"):
        if column not in table.columns:
            raise ValueError(f"{path}: expected columns 'file' and 'label', got "
                             f"{list(table.columns)}")
    given = {}
    for name, label in zip(table["file"].astype(str), table["label"]):
        given[name] = given[Path(name).stem] = str(label)
    missing = [p.name for p in files if p.name not in given and p.stem not in given]
    if missing:
        raise ValueError(f"{path}: expected a label for every file, got none for {missing[:3]}")
    return [given.get(p.name, given.get(p.stem)) for p in files]


def read_npz(path: Path) -> SequenceSet:
    """Sequences from ``x`` (N, T, C) with optional ``lengths``, ``y`` and ``ids``."""
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except ValueError as error:
        raise ValueError(f"{path}: expected an .npz of numeric arrays, got {error}") from None
    if "x" not in arrays:
        raise ValueError(f"{path}: expected an array 'x' (N, T, C), got {sorted(arrays)}")
    x = arrays["x"]
    x = x[..., None] if x.ndim == 2 else x
    if x.ndim != 3 or x.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected 'x' numeric (N, T, C) or (N, T), got {x.dtype} "
                         f"{x.shape}")
    n, t = x.shape[:2]
    lengths = arrays.get("lengths", np.full(n, t))
    if lengths.shape != (n,) or lengths.min(initial=1) < 1 or lengths.max(initial=1) > t:
        raise ValueError(f"{path}: expected 'lengths' ({n},) of values in 1..{t}, got "
                         f"{lengths.shape} in {lengths.min(initial=0)}..{lengths.max(initial=0)}")
    sequences = [x[i, :int(k)].astype(float) for i, k in enumerate(lengths)]
    ids = tuple(str(v) for v in arrays.get("ids", np.arange(n)))
    labels = None
    if "y" in arrays:
        y = arrays["y"]
        if y.shape not in ((n,), (n, t)):
            raise ValueError(f"{path}: expected 'y' ({n},) or ({n}, {t}), got {y.shape}")
        text = np.vectorize(str)(y) if y.size else y.astype(str)
        labels = ([str(v) for v in text] if y.ndim == 1
                  else [text[i, :int(k)] for i, k in enumerate(lengths)])
    features = tuple(f"x{i}" for i in range(x.shape[2]))
    return SequenceSet(path.stem, ids, sequences, labels, features)
