"""Sequence classification: a (bidirectional) LSTM over variable-length sequences, pooled over
their valid steps (last, mean or max), then a linear layer over the classes.

Sequences of a batch are padded to the longest and the model gets their ``lengths=``, so padding
never reaches a valid step. Channels are standardised with statistics of the training set. The
archive's own train/test split is kept; a stratified share of the training set is held out for
validation and early stopping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lstmkit._optional import require
from lstmkit.apps import baselines, metrics, plots
from lstmkit.apps.outputs import write_json
from lstmkit.apps.trainer import MODEL_FILE, TrainConfig, fit, session
from lstmkit.config import LayerConfig, cell_config
from lstmkit.models import POOLINGS, ModelConfig, SequenceModel
from lstmkit.tasks import sequences


@dataclass(frozen=True)
class ClassifyConfig(TrainConfig):
    """A classification run: data, model and training."""

    dataset: str = "JapaneseVowels"
    """Bundled set: JapaneseVowels, BasicMotions, GunPoint, ItalyPowerDemand, ArrowHead, digits."""
    pooling: str = "mean"
    """How the sequence's steps are summarised: last, mean or max (over valid steps)."""
    bidirectional: bool = True
    """Read each sequence in both directions."""
    mode: str = "lstm"
    """Recurrent cell: lstm, gru or rnn."""
    hidden_size: int = 64
    """Units per layer and direction."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    dropout: float = 0.0
    """Dropout between layers."""
    val_fraction: float = 0.2
    """Share of each class of the training set held out for validation and early stopping."""
    epochs: int = 150
    """Passes over the training set (an upper bound when early stopping)."""
    patience: int = 30
    """Stop after this many epochs without a better validation loss (0: never)."""
    batch_size: int = 16
    """Sequences per optimisation step, over all processes together."""
    threads: int = 1
    """Torch CPU threads (0: torch's default); models this small run fastest on one, and do
    not slow to a crawl on a busy machine."""
    out: str = "runs/classify"
    """Folder for the checkpoint, metrics and confusion matrix."""

    def __post_init__(self):
        super().__post_init__()
        if self.pooling not in POOLINGS[1:]:
            raise ValueError(f"pooling: expected one of {POOLINGS[1:]}, got {self.pooling!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: expected a float in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class Batch:
    """Padded sequences, their lengths and labels."""

    x: torch.Tensor  # (N, T, C), zeros past each length
    lengths: torch.Tensor  # (N,)
    y: torch.Tensor  # (N,)


def pad(seqs: list[np.ndarray], labels: np.ndarray, mean, std) -> Batch:
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor((s - mean) / std, dtype=torch.float32)
    return Batch(x, lengths, torch.as_tensor(labels, dtype=torch.long))


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, val) indices: ``fraction`` of each class, at least one sequence of
    each class kept for training."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(round(fraction * len(members)), len(members) - 1)
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return np.sort(train), np.sort(val)


def _logits(model, x, lengths):
    width = int(lengths.max())
    return model(x[:, :width], lengths=lengths)[0]


class _Task:
    def __init__(self, train: Batch, val: Batch | None, batch_size: int):
        self.train, self.val, self.batch_size = train, val, batch_size

    def batches(self, epoch, generator):
        order = torch.randperm(len(self.train.y), generator=generator)
        return [(self.train.x[i], self.train.lengths[i], self.train.y[i])
                for i in order.split(self.batch_size)]

    def loss(self, model, batch, carry):
        x, lengths, y = batch
        return torch.nn.functional.cross_entropy(_logits(model, x, lengths), y), None

    def validate(self, model):
        if self.val is None:
            return None
        device = next(model.parameters()).device
        logits = _logits(model, self.val.x.to(device), self.val.lengths)
        return float(torch.nn.functional.cross_entropy(logits, self.val.y.to(device)))


def build_model(channels: int, classes: int, config: ClassifyConfig) -> SequenceModel:
    cell = cell_config(config.mode, channels, config.hidden_size)
    layer = LayerConfig(cell, config.num_layers, batch_first=True, dropout=config.dropout,
                        bidirectional=config.bidirectional)
    return SequenceModel(ModelConfig(layer, classes, pooling=config.pooling))


def train(config: ClassifyConfig) -> dict:
    """Train on ``config.dataset``, test against the baselines, write checkpoint, metrics and
    the confusion matrix picture. Returns the metrics."""
    data = sequences.load_dataset(config.dataset)
    steps = np.concatenate(data.train)
    mean, std = steps.mean(0), np.where(steps.std(0) > 0, steps.std(0), 1.0)
    fit_rows, val_rows = split(data.train_labels, config.val_fraction, config.seed)
    subset = lambda rows: pad([data.train[i] for i in rows], data.train_labels[rows],  # noqa
                              mean, std)
    task = _Task(subset(fit_rows), subset(val_rows) if len(val_rows) else None,
                 config.batch_size)
    meta = {"app": "classify", "config": config.to_dict(), "classes": list(data.classes),
            "mean": mean.tolist(), "std": std.tolist()}
    started = time.perf_counter()
    with session(config) as runtime:
        model = build_model(data.channels, len(data.classes), config)
        history = fit(model, task, config, meta, runtime)
        if not runtime.is_main:
            return {}
    model.cpu().eval()
    model.meta = meta
    report = evaluate_on(model, data)
    report["training"] = {"seconds": round(time.perf_counter() - started, 1),
                          "epochs": history.epochs, "best_epoch": history.best_epoch + 1,
                          "train": len(fit_rows), "val": len(val_rows)}
    out = Path(config.out)
    write_json(out / "metrics.json", {k: v for k, v in report.items() if k != "confusion"})
    plots.confusion_plot(out / "confusion.png", np.array(report["confusion"]),
                         list(data.classes), f"{data.name}: LSTM on the test set")
    report["files"] = {"checkpoint": str(out / MODEL_FILE), "metrics": str(out / "metrics.json"),
                       "plot": str(out / "confusion.png")}
    return report


def predict_labels(model, seqs: list[np.ndarray]) -> np.ndarray:
    """Class indices the model gives ``seqs``."""
    meta = model.meta
    if seqs[0].shape[1] != len(meta["mean"]):
        raise ValueError(f"data: expected {len(meta['mean'])} channels, got {seqs[0].shape[1]}")
    batch = pad(seqs, np.zeros(len(seqs)), np.array(meta["mean"]), np.array(meta["std"]))
    with torch.no_grad():
        return _logits(model, batch.x, batch.lengths).argmax(-1).numpy()


def evaluate_on(model, data) -> dict:
    """Accuracy, macro-F1 and confusion matrix of the model and the baselines on the test set."""
    if list(data.classes) != model.meta["classes"]:
        raise ValueError(f"dataset: expected the classes {model.meta['classes']}, got "
                         f"{list(data.classes)}")
    k = len(data.classes)
    predictions = {"lstm": predict_labels(model, data.test)}
    predictions.update(baselines.classify_baselines(data.train, data.train_labels, data.test))
    scores = {name: {"accuracy": metrics.accuracy(data.test_labels, p),
                     "macro_f1": metrics.macro_f1(data.test_labels, p, k)}
              for name, p in predictions.items()}
    lengths = [len(s) for s in data.train + data.test]
    return {"dataset": data.name, "train": len(data.train), "test": len(data.test),
            "classes": k, "channels": data.channels, "lengths": [min(lengths), max(lengths)],
            "metrics": scores,
            "confusion": metrics.confusion_matrix(data.test_labels, predictions["lstm"],
                                                  k).tolist()}


def format_table(report: dict) -> str:
    low, high = report["lengths"]
    lines = [f"{report['dataset']}: {report['train']} train / {report['test']} test sequences, "
             f"{report['classes']} classes, {report['channels']} channels, lengths {low}-{high}",
             f"  {'method':42s}{'accuracy':>10s}{'macro-F1':>10s}"]
    for name, row in report["metrics"].items():
        lines.append(f"  {name:42s}{row['accuracy']:10.3f}{row['macro_f1']:10.3f}")
    return "\n".join(lines)


def evaluate(model, config: ClassifyConfig) -> dict:
    """Test a loaded model on the dataset ``config`` names."""
    return evaluate_on(model, sequences.load_dataset(config.dataset))


def predict(model, config: ClassifyConfig):
    """The model's labels for the test split of ``config.dataset``, as a DataFrame."""
    pd = require("pandas", "apps", "tables")
    data = sequences.load_dataset(config.dataset)
    labels = predict_labels(model, data.test)
    classes = model.meta["classes"]
    return pd.DataFrame({"index": range(len(labels)),
                         "true": [data.classes[i] for i in data.test_labels],
                         "predicted": [classes[i] for i in labels]})
