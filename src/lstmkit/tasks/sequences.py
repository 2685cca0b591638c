"""Labelled sequences for classification: UEA/UCR archive sets shipped inside sktime, and
scikit-learn's handwritten digits read row by row. Nothing downloads.

Each set comes as a :class:`LabelledSequences` with its own train/test split (the archive's
official one; for the digits a fixed, stratified 70/30 split), every sequence a float array
(T, C) whose length T may differ from one sequence to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstmkit._optional import require


@dataclass(frozen=True)
class LabelledSequences:
    name: str
    train: list[np.ndarray]
    """Sequences (T_i, C)."""
    train_labels: np.ndarray
    """Class indices into ``classes``."""
    test: list[np.ndarray]
    test_labels: np.ndarray
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return self.train[0].shape[1]


def _sktime_split(loader: str, split: str):
    datasets = require("sktime.datasets", "apps", "bundled classification datasets")
    x, y = getattr(datasets, loader)(split=split, return_X_y=True)
    sequences = []
    for _, row in x.iterrows():  # nested frame: one pd.Series per channel
        channels = [np.asarray(cell, dtype=float) for cell in row]
        length = min(len(c) for c in channels)
        sequences.append(np.stack([c[:length] for c in channels], 1))
    return sequences, np.asarray(y).astype(str)


def _sktime(name: str, loader: str) -> LabelledSequences:
    train, train_y = _sktime_split(loader, "train")
    test, test_y = _sktime_split(loader, "test")
    classes = tuple(str(c) for c in sorted(set(train_y) | set(test_y), key=natural))
    index = {c: i for i, c in enumerate(classes)}
    return LabelledSequences(name, train, np.array([index[c] for c in train_y]), test,
                             np.array([index[c] for c in test_y]), classes)


def natural(label: str):
    """Sort key: integer labels in numeric order, before the others in text order."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _digits() -> LabelledSequences:
    datasets = require("sklearn.datasets", "apps", "the digits dataset")
    selection = require("sklearn.model_selection", "apps", "the digits dataset")
    digits = datasets.load_digits()
    images = digits.images.astype(float)  # (N, 8, 8): 8 steps (rows) of 8 features
    a, b, ya, yb = selection.train_test_split(images, digits.target, test_size=0.3,
                                              random_state=0, stratify=digits.target)
    return LabelledSequences("digits", list(a), ya, list(b), yb,
                             tuple(str(c) for c in range(10)))


DATASETS = {
    "JapaneseVowels": lambda: _sktime("JapaneseVowels", "load_japanese_vowels"),
    "BasicMotions": lambda: _sktime("BasicMotions", "load_basic_motions"),
    "GunPoint": lambda: _sktime("GunPoint", "load_gunpoint"),
    "ItalyPowerDemand": lambda: _sktime("ItalyPowerDemand", "load_italy_power_demand"),
    "ArrowHead": lambda: _sktime("ArrowHead", "load_arrow_head"),
    "digits": _digits,
}
"""Bundled datasets: name -> loader."""


def load_dataset(name: str) -> LabelledSequences:
    if name not in DATASETS:
        raise ValueError(f"--dataset: expected one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]()
