"""The classifier's tensors: padded batches, the training task, class weights and the model's
probabilities, for a label per sequence or a label per step.

Dimension legend: N sequences, T steps (the longest), C channels, K classes.

Sequences of a batch are padded to the longest and the model gets their ``lengths=``, so padding
never reaches a valid step; labels per step are padded with :data:`IGNORE`, which the loss skips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100
"""Label of the padding steps: ``cross_entropy``'s ``ignore_index``."""


@dataclass(frozen=True)
class Batch:
    """Padded sequences, their lengths and labels."""

    x: torch.Tensor  # (N, T, C), zeros past each length
    lengths: torch.Tensor  # (N,)
    y: torch.Tensor  # (N,) or, per step, (N, T) with IGNORE past each length


def pad(seqs: list[np.ndarray], labels, mean, std) -> Batch:
    """``labels``: class indices (N,), or per step a list of (T_i,) arrays."""
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor((s - mean) / std, dtype=torch.float32)
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        return Batch(x, lengths, torch.as_tensor(labels, dtype=torch.long))
    y = torch.full(x.shape[:2], IGNORE, dtype=torch.long)
    for i, steps in enumerate(labels):
        y[i, :len(steps)] = torch.as_tensor(steps, dtype=torch.long)
    return Batch(x, lengths, y)


def split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (kept, held-out) indices: ``fraction`` of each class, at least one sequence of
    each class kept. Labels per step (a list of arrays) split the sequences at random."""
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1):
        labels = np.zeros(len(labels), dtype=int)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(round(fraction * len(members)), len(members) - 1)
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return np.sort(train), np.sort(val)


def class_weights(spec: str, labels, classes: int) -> torch.Tensor | None:
    """The loss weight of each class: None (``"none"``), ``n / (K n_c)`` (``"balanced"``, as
    scikit-learn; 0 for a class without examples), or the comma-separated numbers given."""
    if spec == "none":
        return None
    if spec == "balanced":
        flat = np.concatenate([np.atleast_1d(v) for v in labels])
        counts = np.bincount(flat, minlength=classes).astype(float)
        return torch.tensor(np.divide(len(flat), classes * counts, out=np.zeros(classes),
                                      where=counts > 0), dtype=torch.float32)
    weights = [float(w) for w in spec.split(",")]
    if len(weights) != classes:
        raise ValueError(f"class_weights: expected {classes} weights (one per class), got "
                         f"{len(weights)}")
    return torch.tensor(weights, dtype=torch.float32)


def logits(model, x, lengths):
    """(N, K), or per step (N, T, K) for the valid width of the batch."""
    width = int(lengths.max())
    return model(x[:, :width], lengths=lengths)[0]


def loss(model, batch: Batch, weight: torch.Tensor | None) -> torch.Tensor:
    out = logits(model, batch.x, batch.lengths)
    y = batch.y[:, :out.shape[1]] if batch.y.ndim == 2 else batch.y
    if weight is not None:
        weight = weight.to(out.device)
    return torch.nn.functional.cross_entropy(out.flatten(0, -2), y.flatten().to(out.device),
                                             weight=weight, ignore_index=IGNORE)


class Task:
    """The trainer's view of a labelled set: shuffled batches, weighted cross-entropy."""

    def __init__(self, train: Batch, val: Batch | None, batch_size: int,
                 weight: torch.Tensor | None):
        self.train, self.val, self.batch_size, self.weight = train, val, batch_size, weight

    def batches(self, epoch, generator):
        order = torch.randperm(len(self.train.y), generator=generator)
        return [(self.train.x[i], self.train.lengths[i], self.train.y[i])
                for i in order.split(self.batch_size)]

    def loss(self, model, batch, carry):
        return loss(model, Batch(*batch), self.weight), None

    def validate(self, model):
        if self.val is None:
            return None
        device = next(model.parameters()).device
        val = Batch(self.val.x.to(device), self.val.lengths, self.val.y)
        return float(loss(model, val, self.weight))


def probabilities(model, seqs: list[np.ndarray], mean, std, chunk: int = 256) -> list:
    """Class probabilities: per sequence an array (K,), or per step (T_i, K)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(seqs), chunk):
            part = seqs[start:start + chunk]
            batch = pad(part, np.zeros(len(part), dtype=int), mean, std)
            p = logits(model, batch.x, batch.lengths).softmax(-1).numpy()
            out += [p[i] if p.ndim == 2 else p[i, :len(s)] for i, s in enumerate(part)]
    return out
