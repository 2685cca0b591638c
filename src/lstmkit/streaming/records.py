"""What the stream engine hands out and keeps: its errors, a stream's snapshot, a push's
outcome, every stream in bulk, and the queue's internal records (a call, its groups)."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np
import torch


class UnknownStream(KeyError):
    """A push, reset or close named a stream that is not open."""

    def __str__(self) -> str:
        return str(self.args[0])


class EngineFull(RuntimeError):
    """Opening one more stream would pass ``max_streams``."""


class ChunkTooLong(ValueError):
    """A chunk has more steps than ``max_chunk``."""


class StepMismatch(ValueError):
    """A push said at which step it starts (``at``), and the stream is elsewhere."""


class StreamSnapshot(NamedTuple):
    """A stream's saved state: what eviction keeps and :meth:`StreamEngine.open` restores.

    Shape: each tensor of ``state`` is (A, *shape), the stream's slice of one part of the
    model's state (A = L*D for a layer stack, 1 for each leaf of an xLSTM block stack's).
    """

    state: tuple[torch.Tensor, ...]
    steps: int


class Pushed(NamedTuple):
    """What one push did: the outputs and the stream's step count after them."""

    y: torch.Tensor
    """(T, O): the model's output after each step of the chunk."""
    steps: int
    """Steps the stream has taken since it was opened or reset, this chunk included."""


class StreamTable(NamedTuple):
    """Every stream at one moment, in bulk (what :meth:`StreamEngine.export` returns and
    :meth:`StreamEngine.load` takes).

    Shape: each tensor of ``parts`` is (A, N, *shape) (A as in :class:`StreamSnapshot`);
    stream ``ids[k]`` is at ``[:, k]``.
    """

    ids: list[str]
    steps: list[int]
    parked: list[bool]
    parts: tuple[torch.Tensor, ...]

    def snapshots(self) -> dict[str, StreamSnapshot]:
        return {sid: StreamSnapshot(tuple(p[:, k] for p in self.parts), self.steps[k])
                for k, sid in enumerate(self.ids)}


class _Stream:
    """An open stream: its id and its slot in the state pool (its step count and last use
    are in the engine's arrays, by slot, so that a round updates them in one call)."""

    __slots__ = ("id", "slot")

    def __init__(self, stream_id: str, slot: int):
        self.id, self.slot = stream_id, slot


class _Call:
    """One push_many or push_each: its groups, and the event its caller waits on."""

    __slots__ = ("remaining", "wake", "lead", "start", "groups")

    def __init__(self, groups: int):
        self.remaining, self.start = groups, time.perf_counter()
        self.wake = threading.Event()  # set when all are finished, or when handed the lead
        self.lead = False

    def finish(self) -> None:
        """One group done (only the leading thread calls this)."""
        self.remaining -= 1
        if not self.remaining:
            self.wake.set()


class _Group:
    """Up to ``max_batch`` chunks of one call, for distinct streams, stepped in one round.

    A round fills ``out`` (b, T, O) with a row per stream that was stepped (``live``, positions
    into ``ids``; None: all), ``steps`` with their counts after it, and ``errors`` (position ->
    exception) for the others, which it did not touch.
    """

    __slots__ = ("call", "ids", "xs", "ats", "stacked", "streams", "live", "out", "lengths",
                 "steps", "errors")

    def __init__(self, call: _Call, ids: list[str], xs: list[torch.Tensor], ats,
                 stacked: torch.Tensor | None = None):
        self.call, self.ids, self.xs, self.ats, self.stacked = call, ids, xs, ats, stacked
        self.streams: list[_Stream] = []
        self.live: list[int] | None = None
        self.out: torch.Tensor | None = None
        self.lengths: list[int] | None = None
        self.steps: np.ndarray | None = None  # (b,) the step counts after the round
        self.errors: dict[int, BaseException] = {}

    def positions(self) -> list[int]:
        return list(range(len(self.ids))) if self.live is None else self.live

    def fail(self, error: BaseException) -> None:
        for k in self.positions():
            self.errors[k] = error
        self.live, self.streams, self.out = [], [], None

    def outcomes(self, into: dict) -> None:
        """Each stream's outcome: a :class:`Pushed` or its error."""
        if self.out is not None:
            rows = self.out.unbind(0)
            lengths = self.lengths
            for j, k in enumerate(self.positions()):
                if k not in self.errors:
                    y = rows[j] if lengths is None else rows[j][:lengths[j]]
                    into[self.ids[k]] = Pushed(y, int(self.steps[j]))
        for k, error in self.errors.items():
            into[self.ids[k]] = error


def _collect(groups: list[_Group]) -> dict:
    """Each stream's outcome in ``groups``: a :class:`Pushed` or its error."""
    outcomes = {}
    for group in groups:
        group.outcomes(outcomes)
    return outcomes
