"""Sequence classification on a bundled set or on the user's own files: a (bidirectional) LSTM
over variable-length sequences, pooled over their valid steps (last, mean or max), then a linear
layer over the classes; or, with ``labelling="step"``, a class for every step (sequence
labelling: activity or event detection on sensor streams).

Channels are standardised with statistics of the training set. A bundled set keeps the archive's
own train/test split; the user's data (``data``, read by :mod:`lstmkit.tasks.sequence_files`)
is split into train and test (``test_fraction``, stratified) unless ``test_data`` is given. A
stratified share of the training set is held out for validation and early stopping.

From Python:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = [rng.normal(size=(int(rng.integers(5, 9)), 2)) + (i % 2) for i in range(16)]
>>> y = ["low" if i % 2 == 0 else "high" for i in range(16)]
>>> import tempfile
>>> model = fit(x, y, epochs=2, progress=False, out=tempfile.mkdtemp())
>>> predict(model, x[:3]).tolist() in (["low", "high", "low"], ["high"] * 3, ["low"] * 3)
True
>>> predict_proba(model, x[:3]).shape
(3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from lstmkit._optional import require
from lstmkit.apps import baselines, metrics, plots
from lstmkit.apps import classify_model as cm
from lstmkit.apps.model_options import ModelOptions, model_config
from lstmkit.apps.outputs import write_json
from lstmkit.apps.trainer import MODEL_FILE, TrainConfig, session
from lstmkit.apps.trainer import fit as fit_model
from lstmkit.models import POOLINGS, SequenceModel
from lstmkit.tasks import sequence_files, sequences

LABELLINGS = ("sequence", "step")
FROM_ARRAYS = "arrays"
"""The data name of a model trained by :func:`fit` (its training set is not kept)."""


@dataclass(frozen=True)
class ClassifyConfig(TrainConfig):
    """A classification run: data, model and training."""

    dataset: str = "JapaneseVowels"
    """Bundled set: JapaneseVowels, BasicMotions, GunPoint, ItalyPowerDemand, ArrowHead, digits."""
    data: str | None = None
    """Your sequences: a folder of .csv/.npy files with labels.csv, a long .csv or .parquet
    table, or an .npz file (see lstmkit.tasks.sequence_files); replaces --dataset."""
    labels: str | None = None
    """With a folder: the labels file, columns file and label (None: labels.csv inside it)."""
    test_data: str | None = None
    """Labelled sequences to test on, laid out like --data (None: hold out --test-fraction)."""
    test_fraction: float = 0.2
    """Share of each class of --data held out for the test (without --test-data)."""
    id_column: str = "id"
    """Tables: the column that names the sequence of each row."""
    time_column: str = "time"
    """Tables: the column that orders the rows of a sequence (if present)."""
    label_column: str = "label"
    """Tables: the column of the labels (per step with --labelling step)."""
    labelling: str = "sequence"
    """sequence: one label per sequence; step: a label per step (sequence labelling)."""
    pooling: str = "mean"
    """How a sequence's steps are summarised: last, mean or max (over valid steps)."""
    class_weights: str = "none"
    """Loss weight of each class: none, balanced (inverse frequency) or comma-separated."""
    val_fraction: float = 0.2
    """Share of each class of the training set held out for validation and early stopping."""
    model: ModelOptions = field(default_factory=lambda: ModelOptions(bidirectional=True))
    """The recurrent stack."""
    epochs: int = 150
    """Passes over the training set (an upper bound when early stopping)."""
    patience: int = 30
    """Stop after this many epochs without a better validation loss (0: never)."""
    batch_size: int = 16
    """Sequences per optimisation step, over all processes together."""
    out: str = "runs/classify"
    """Folder for the checkpoint, metrics and confusion matrix."""
    path_fields: ClassVar[tuple[str, ...]] = ("data", "labels", "test_data")

    def __post_init__(self):
        super().__post_init__()
        if self.pooling not in POOLINGS[1:]:
            raise ValueError(f"pooling: expected one of {POOLINGS[1:]}, got {self.pooling!r}")
        if self.labelling not in LABELLINGS:
            raise ValueError(f"labelling: expected one of {LABELLINGS}, got {self.labelling!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a float in [0, 1), got "
                                 f"{getattr(self, name)}")
        if self.class_weights not in ("none", "balanced"):
            try:
                [float(w) for w in self.class_weights.split(",")]
            except ValueError:
                raise ValueError(f"class_weights: expected none, balanced or comma-separated "
                                 f"numbers, got {self.class_weights!r}") from None
        if self.data is None and (self.labels or self.test_data):
            raise ValueError("labels, test_data: expected only with data, got them without it")
        if self.labelling == "step" and self.data is None and self.test_data is None:
            raise ValueError("labelling: expected data with labels per step for 'step', the "
                             "bundled sets have one label per sequence")

    @property
    def columns(self) -> sequence_files.Columns:
        return sequence_files.Columns(self.id_column, self.time_column, self.label_column)


@dataclass(frozen=True)
class Data:
    """A labelled train/test split, labels as class indices (per step: a list of arrays)."""

    name: str
    train: list[np.ndarray]
    train_labels: object
    test: list[np.ndarray]
    test_labels: object
    test_ids: tuple[str, ...]
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return self.train[0].shape[1]


def _read(config: ClassifyConfig, path: str, labels: str | None = None):
    found = sequence_files.read(path, config.columns, labels, config.labelling == "step")
    if found.labels is not None and found.per_step != (config.labelling == "step"):
        raise ValueError(f"labelling: expected labels per {config.labelling} in {path}, got "
                         f"labels per {'step' if found.per_step else 'sequence'}")
    return found


def _indices(labels: list, classes: tuple[str, ...], where: str):
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in np.concatenate([np.atleast_1d(x) for x in labels])}
                     - set(index))
    if unknown:
        raise ValueError(f"{where}: expected labels among the classes {list(classes)}, got "
                         f"{unknown[:3]}")
    if isinstance(labels[0], np.ndarray):
        return [np.array([index[v] for v in steps]) for steps in labels]
    return np.array([index[v] for v in labels])


def _classes(*label_lists) -> tuple[str, ...]:
    seen = {str(v) for labels in label_lists for x in labels for v in np.atleast_1d(x)}
    return tuple(sorted(seen, key=sequences.natural))


def load_data(config: ClassifyConfig) -> Data:
    """The train/test split ``config`` names: a bundled set, or the user's files."""
    if config.data is None:
        d = sequences.load_dataset(config.dataset)
        return Data(d.name, d.train, d.train_labels, d.test, d.test_labels,
                    tuple(str(i) for i in range(len(d.test))), d.classes)
    found = _read(config, config.data, config.labels)
    if found.labels is None:
        raise ValueError(f"data: expected labels to train on ({config.labels or 'labels.csv'} "
                         f"or a {config.label_column!r} column), found none in {config.data}")
    if config.test_data is not None:
        test = _read(config, config.test_data)
        if test.labels is None:
            raise ValueError(f"test_data: expected labels, found none in {config.test_data}")
        classes = _classes(found.labels, test.labels)
        return Data(found.name, found.sequences, _indices(found.labels, classes, "data"),
                    test.sequences, _indices(test.labels, classes, "test_data"), test.ids,
                    classes)
    classes = _classes(found.labels)
    labels = _indices(found.labels, classes, "data")
    keep, test = cm.split(labels, config.test_fraction, config.seed + 1)
    if not len(test):
        raise ValueError(f"test_fraction: expected at least one test sequence, got none of "
                         f"{len(labels)} sequences (give --test-data or more sequences)")
    pick = lambda rows, items: [items[i] for i in rows]  # noqa: E731
    return Data(found.name, pick(keep, found.sequences), _pick(labels, keep),
                pick(test, found.sequences), _pick(labels, test), tuple(pick(test, found.ids)),
                classes)


def _pick(labels, rows):
    return labels[rows] if isinstance(labels, np.ndarray) else [labels[i] for i in rows]


def build_model(channels: int, classes: int, config: ClassifyConfig) -> SequenceModel:
    pooling = "none" if config.labelling == "step" else config.pooling
    return SequenceModel(model_config(config.model, channels, classes, pooling=pooling))


def _train_model(config: ClassifyConfig, seqs: list, labels, classes: tuple[str, ...],
                 name: str):
    """The trained model (best weights, on the CPU, ``meta`` set; None on the processes other
    than the first), its history and the (training, validation) sequence counts."""
    steps = np.concatenate(seqs)
    mean, std = steps.mean(0), np.where(steps.std(0) > 0, steps.std(0), 1.0)
    fit_rows, val_rows = cm.split(labels, config.val_fraction, config.seed)
    subset = lambda rows: cm.pad([seqs[i] for i in rows], _pick(labels, rows),  # noqa: E731
                                 mean, std)
    weight = cm.class_weights(config.class_weights, _pick(labels, fit_rows), len(classes))
    task = cm.Task(subset(fit_rows), subset(val_rows) if len(val_rows) else None,
                   config.batch_size, weight)
    meta = {"app": "classify", "config": config.to_dict(), "classes": list(classes),
            "mean": mean.tolist(), "std": std.tolist(), "data": name}
    with session(config) as runtime:
        model = build_model(seqs[0].shape[1], len(classes), config)
        history = fit_model(model, task, config, meta, runtime)
        if not runtime.is_main:
            return None, history, ()
    model.cpu().eval()
    model.meta = meta
    return model, history, (len(fit_rows), len(val_rows))


def train(config: ClassifyConfig) -> dict:
    """Train on the data ``config`` names, test against the baselines, write checkpoint,
    metrics and the confusion matrix picture. Returns the metrics."""
    data = load_data(config)
    model, history, rows = _train_model(config, data.train, data.train_labels, data.classes,
                                        data.name)
    if model is None:
        return {}
    report = evaluate_on(model, data)
    report["training"] = {"seconds": round(history.seconds, 1), "epochs": history.epochs,
                          "best_epoch": history.best_epoch + 1, "train": rows[0],
                          "val": rows[1], "stopped_early": history.stopped_early}
    out = Path(config.out)
    write_json(out / "metrics.json", {k: v for k, v in report.items() if k != "confusion"})
    what = "steps" if config.labelling == "step" else "sequences"
    plots.confusion_plot(out / "confusion.png", np.array(report["confusion"]),
                         list(data.classes), f"{data.name}: LSTM on the test {what}")
    report["files"] = {"checkpoint": str(out / MODEL_FILE), "metrics": str(out / "metrics.json"),
                       "plot": str(out / "confusion.png")}
    return report


def _stats(model):
    return np.array(model.meta["mean"]), np.array(model.meta["std"])


def _check_channels(model, seqs):
    if seqs[0].shape[1] != len(model.meta["mean"]):
        raise ValueError(f"data: expected {len(model.meta['mean'])} channels, got "
                         f"{seqs[0].shape[1]}")


def predict_labels(model, seqs: list[np.ndarray]):
    """Class indices the model gives ``seqs``: (N,), or per step a list of (T_i,) arrays."""
    _check_channels(model, seqs)
    probs = cm.probabilities(model, seqs, *_stats(model))
    if model.config.pooling == "none":
        return [p.argmax(-1) for p in probs]
    return np.stack(probs).argmax(-1)


def evaluate_on(model, data: Data) -> dict:
    """Accuracy, macro-F1, per-class rates and the confusion matrix of the model and the
    baselines on the test set (per step when the model labels steps)."""
    k, classes = len(data.classes), list(data.classes)
    if classes != model.meta["classes"]:
        raise ValueError(f"data: expected the classes {model.meta['classes']}, got {classes}")
    predicted = predict_labels(model, data.test)
    per_step = model.config.pooling == "none"
    compare = baselines.step_baselines if per_step else baselines.classify_baselines
    actual = np.concatenate(data.test_labels) if per_step else data.test_labels
    predictions = {"lstm": np.concatenate(predicted) if per_step else predicted}
    if data.train:  # the baselines need the training set (not kept for a model from fit())
        predictions.update(compare(data.train, data.train_labels, data.test))
    scores = {name: {"accuracy": metrics.accuracy(actual, p),
                     "macro_f1": metrics.macro_f1(actual, p, k)}
              for name, p in predictions.items()}
    lengths = [len(s) for s in list(data.train) + list(data.test)]
    matrix = metrics.confusion_matrix(actual, predictions["lstm"], k)
    return {"dataset": data.name, "labelling": "step" if per_step else "sequence",
            "train": len(data.train), "test": len(data.test), "test_steps": int(sum(
                len(s) for s in data.test)), "classes": k, "channels": data.channels,
            "lengths": [min(lengths), max(lengths)], "metrics": scores,
            "per_class": metrics.per_class(matrix, classes), "confusion": matrix.tolist()}


def format_table(report: dict) -> str:
    low, high = report["lengths"]
    unit = "steps" if report.get("labelling") == "step" else "sequences"
    lines = [f"{report['dataset']}: {report['train']} train / {report['test']} test sequences, "
             f"{report['classes']} classes, {report['channels']} channels, lengths {low}-{high}"
             + (f"; scored per step ({report['test_steps']} steps)" if unit == "steps" else ""),
             f"  {'method':42s}{'accuracy':>10s}{'macro-F1':>10s}"]
    for name, row in report["metrics"].items():
        lines.append(f"  {name:42s}{row['accuracy']:10.3f}{row['macro_f1']:10.3f}")
    lines.append(f"  {'LSTM per class':42s}{'precision':>10s}{'recall':>10s}{'F1':>8s}"
                 f"{'support':>9s}")
    for name, row in report.get("per_class", {}).items():
        lines.append(f"  {name:42s}{row['precision']:10.3f}{row['recall']:10.3f}"
                     f"{row['f1']:8.3f}{row['support']:9d}")
    return "\n".join(lines)


def _trained_on(model) -> str | None:
    return model.meta.get("config", {}).get("data")


def _training_config(model) -> ClassifyConfig:
    return ClassifyConfig.from_dict(model.meta["config"])


def _target(model, config: ClassifyConfig, need_labels: bool):
    """(name, sequences, labels or None, ids) that evaluate or predict reads: --test-data,
    else a --data other than the training data (all of it), else the training run's test."""
    path = config.test_data or (config.data if config.data != _trained_on(model) else None)
    if path is None:
        data = load_data(config)
        return data.name, data.test, data.test_labels, data.test_ids
    found = _read(config, path)
    if found.labels is None and need_labels:
        raise ValueError(f"data: expected labels to evaluate on, found none in {path}")
    labels = None if found.labels is None else _indices(found.labels,
                                                         tuple(model.meta["classes"]), "data")
    return found.name, found.sequences, labels, found.ids


def evaluate(model, config: ClassifyConfig) -> dict:
    """Test a loaded model: on ``config.test_data``, on a ``config.data`` other than it was
    trained on, or else on the test split of its own data."""
    name, seqs, labels, ids = _target(model, config, need_labels=True)
    train, train_labels = [], []
    if model.meta.get("data") != FROM_ARRAYS:
        trained = load_data(_training_config(model))
        train, train_labels = trained.train, trained.train_labels
    return evaluate_on(model, Data(name, train, train_labels, seqs, labels, ids,
                                   tuple(model.meta["classes"])))


def predict_table(model, config: ClassifyConfig):
    """Labels and class probabilities the model gives the sequences of ``config.data`` (or its
    test split), as a DataFrame: a row per sequence, or per step."""
    pd = require("pandas", "apps", "tables")
    name, seqs, labels, ids = _target(model, config, need_labels=False)
    _check_channels(model, seqs)
    classes = model.meta["classes"]
    probs = cm.probabilities(model, seqs, *_stats(model))
    per_step = model.config.pooling == "none"
    rows = {"id": np.repeat(ids, [len(p) for p in probs]) if per_step else list(ids)}
    if per_step:
        rows["step"] = np.concatenate([np.arange(len(p)) for p in probs])
        probs = [np.concatenate(probs)]
        labels = None if labels is None else [np.concatenate(labels)]
    p = np.stack(probs) if not per_step else probs[0]
    if labels is not None:
        rows["true"] = [classes[i] for i in (labels[0] if per_step else labels)]
    rows["predicted"] = [classes[i] for i in p.argmax(-1)]
    rows.update({f"p_{c}": p[:, j] for j, c in enumerate(classes)})
    return pd.DataFrame(rows)


def _as_sequences(x, lengths=None) -> list[np.ndarray]:
    """A list of (T_i, C) arrays from a list, or from an array (N, T, C) with ``lengths``."""
    if isinstance(x, (list, tuple)):
        seqs = [np.asarray(s, float) for s in x]
        return [s[:, None] if s.ndim == 1 else s for s in seqs]
    x = np.asarray(x, float)
    x = x[..., None] if x.ndim == 2 else x
    if x.ndim != 3:
        raise ValueError(f"x: expected sequences (N, T, C), (N, T) or a list, got {x.shape}")
    lengths = np.full(len(x), x.shape[1]) if lengths is None else np.asarray(lengths)
    return [x[i, :int(n)] for i, n in enumerate(lengths)]


def _from_input(x, y, lengths, config: ClassifyConfig):
    if hasattr(x, "groupby"):  # a long DataFrame: a row per step
        found = sequence_files.from_frame(x, config.columns, config.labelling == "step")
        return found.sequences, found.labels
    seqs = _as_sequences(x, lengths)
    if y is None:
        return seqs, None
    y = [np.asarray(v).astype(str)[:len(s)] for v, s in zip(y, seqs)] \
        if config.labelling == "step" else [str(v) for v in y]
    return seqs, y


def fit(x, y=None, lengths=None, config: ClassifyConfig | None = None, **options):
    """Train a classifier on arrays or a DataFrame; returns the model (also saved in
    ``config.out``).

    Args:
        x: a list of (T_i, C) arrays, an array (N, T, C) with ``lengths``, or a long DataFrame
            (a row per step; columns ``config.id_column``, ``time_column``, ``label_column``).
        y: labels (N,), or per step (N, T) with ``labelling="step"``; None with a DataFrame.
        lengths: valid steps of each row of an array ``x``.
        config: the run's settings; ``options`` override its fields.
    """
    config = replace(config or ClassifyConfig(), **options)
    seqs, labels = _from_input(x, y, lengths, config)
    if labels is None:
        raise ValueError("y: expected labels, got none")
    classes = _classes(labels)
    model, _, _ = _train_model(config, seqs, _indices(labels, classes, "y"), classes,
                               FROM_ARRAYS)
    return model


def predict_proba(model, x, lengths=None):
    """Class probabilities of ``x`` (as :func:`fit` takes it): (N, K), or per step a list of
    (T_i, K) arrays."""
    seqs = _from_input(x, None, lengths, _training_config(model))[0]
    _check_channels(model, seqs)
    probs = cm.probabilities(model, seqs, *_stats(model))
    return probs if model.config.pooling == "none" else np.stack(probs)


def predict(model, x, lengths=None):
    """Class names the model gives ``x``: (N,), or per step a list of (T_i,) arrays."""
    classes = np.array(model.meta["classes"])
    probs = predict_proba(model, x, lengths)
    if isinstance(probs, list):
        return [classes[p.argmax(-1)] for p in probs]
    return classes[probs.argmax(-1)]
