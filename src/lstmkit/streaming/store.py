"""Saving and restoring the streams of an engine: one safetensors file, no pickle.

A server writes every stream's snapshot here on shutdown and reads them back on start, so a
restart loses no stream.
"""

from __future__ import annotations

from pathlib import Path

from lstmkit.checkpoint import load_tensors, save_tensors
from lstmkit.streaming.engine import StreamSnapshot

KIND = "lstmkit.streams/1"


def save_snapshots(path: str | Path, snapshots: dict[str, StreamSnapshot], **meta) -> None:
    """Write ``snapshots`` (stream id -> snapshot) atomically; ``meta`` is JSON-ready extra."""
    ids = list(snapshots)
    tensors = {f"{k}/{j}": t for k, sid in enumerate(ids)
               for j, t in enumerate(snapshots[sid].state)}
    steps = [snapshots[sid].steps for sid in ids]
    save_tensors(path, tensors, {"kind": KIND, "ids": ids, "steps": steps, **meta})


def load_snapshots(path: str | Path) -> tuple[dict[str, StreamSnapshot], dict]:
    """What :func:`save_snapshots` wrote: (stream id -> snapshot, the extra metadata)."""
    tensors, meta = load_tensors(path)
    if meta.pop("kind", None) != KIND:
        raise ValueError(f"streams: expected a file of kind {KIND!r} in {path}, got another")
    ids, steps = meta.pop("ids"), meta.pop("steps")
    parts = len(tensors) // len(ids) if ids else 0
    snapshots = {sid: StreamSnapshot(tuple(tensors[f"{k}/{j}"] for j in range(parts)), steps[k])
                 for k, sid in enumerate(ids)}
    return snapshots, meta
