"""Data and problems.

The memory tasks here (problems that only long-range memory solves, from the 1997 LSTM paper and
later benchmarks) are registered in :data:`TASKS`; the applications' data loaders live beside
them in :mod:`~lstmkit.tasks.series`, :mod:`~lstmkit.tasks.text` and
:mod:`~lstmkit.tasks.sequences`.

:func:`make` builds a task by name; every task draws its sequences from a ``torch.Generator``, so
a seed fixes them. See :mod:`lstmkit.tasks.base` for the interface.

Examples:
    >>> import torch
    >>> task = make("adding", length=100)
    >>> batch = task.sample(4, torch.Generator().manual_seed(0))
    >>> batch.x.shape[0], batch.x.shape[2], batch.target.shape
    (4, 2, torch.Size([4]))
"""

from __future__ import annotations

from lstmkit.tasks.adding import Adding1997, Multiplication1997
from lstmkit.tasks.base import Batch, Evaluation, Task
from lstmkit.tasks.brackets import ModularBrackets
from lstmkit.tasks.chomsky import (
    BucketSort,
    CycleNavigation,
    EvenPairs,
    ReverseString,
    StackManipulation,
)
from lstmkit.tasks.lags import LongLag
from lstmkit.tasks.modern import AddingModern, Copy, Modular, Parity
from lstmkit.tasks.reber import ContinualReber, EmbeddedReber
from lstmkit.tasks.recall import MQAR
from lstmkit.tasks.temporal_order import TemporalOrder, TemporalOrder3

TASKS = {
    "adding": Adding1997,
    "multiplication": Multiplication1997,
    "temporal-order-6a": TemporalOrder,
    "temporal-order-6b": TemporalOrder3,
    "long-lag-2c": LongLag,
    "reber": EmbeddedReber,
    "reber-continual": ContinualReber,
    "adding-modern": AddingModern,
    "copy": Copy,
    "parity": Parity,
    "modular": Modular,
    "modular-brackets": ModularBrackets,
    "even-pairs": EvenPairs,
    "cycle-navigation": CycleNavigation,
    "reverse-string": ReverseString,
    "stack-manipulation": StackManipulation,
    "bucket-sort": BucketSort,
    "mqar": MQAR,
}
"""Task name -> class."""

_LENGTHS = {Adding1997, Multiplication1997, LongLag, AddingModern, Copy, Parity, Modular,
            ContinualReber, ModularBrackets, EvenPairs, CycleNavigation, ReverseString,
            StackManipulation, BucketSort, MQAR}


def takes_length(name: str) -> bool:
    """Whether task ``name`` has a length (T, q, the longest training length, or the chunk of
    truncated backpropagation)."""
    return TASKS[name] in _LENGTHS


def make(name: str, length: int | None = None, distractors: int | None = None,
         seed: int = 0) -> Task:
    """The task called ``name``.

    Args:
        name: a key of :data:`TASKS`.
        length: T for the adding, multiplication and copy problems, q for long-lag-2c, the
            longest training length for the length-generalisation tasks, the number of pairs
            of mqar, the chunk (truncation length) of reber-continual; None: the task's
            default. Tasks of fixed length reject it.
        distractors: p for long-lag-2c (None: p = q); other tasks reject it.
        seed: fixes the training and test sets of tasks that have fixed ones (reber).
    """
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {name!r}")
    cls, options = TASKS[name], {}
    if length is not None:
        if cls not in _LENGTHS:
            raise ValueError(f"length: expected none for task {name!r} (its lengths are fixed "
                             f"by its definition), got {length}")
        options["chunk" if cls is ContinualReber else "length"] = length
    if distractors is not None:
        if cls is not LongLag:
            raise ValueError(f"distractors: expected only with long-lag-2c, got task {name!r}")
        options["distractors"] = distractors
    elif cls is LongLag:
        options["distractors"] = options.get("length", LongLag.length)
    if cls is EmbeddedReber:
        options["seed"] = seed
    return cls(**options)


__all__ = ["TASKS", "Batch", "Evaluation", "Task", "make", "takes_length"]
