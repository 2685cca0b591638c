"""Saving and restoring the streams of an engine: a safetensors state file and a write-ahead
journal, no pickle.

The state file holds every stream (open and parked) in bulk, the identity of the model that
made the states (so another model's file is refused, not resumed), and the generation of the
journal that continues it. The journal (``STATE.wal.<generation>``, JSON lines) holds every
acknowledged change since: each push's chunk with the step count it started at, resets, opens
and closes. A restart loads the state file and replays the journals from its generation on, so
a crash loses nothing the journal held (see :class:`Journal` for what that is in each mode).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from lstmkit.checkpoint import load_tensors, save_tensors
from lstmkit.streaming.engine import StreamSnapshot, StreamTable

log = logging.getLogger(__name__)

KIND = "lstmkit.streams/2"


class ForeignState(ValueError):
    """A state file written for another model."""


def model_identity(model) -> str:
    """A hash of a model's config and weights: states are only resumed by the model that made
    them (a retrained checkpoint of the same shapes is another model)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_table(path: str | Path, table: StreamTable, **meta) -> None:
    """Write ``table`` atomically; ``meta`` (JSON-ready: the model's identity, the journal's
    generation) goes with it."""
    tensors = {f"part/{j}": p for j, p in enumerate(table.parts)}
    save_tensors(path, tensors, {"kind": KIND, "ids": table.ids, "steps": table.steps,
                                 "parked": table.parked, **meta})


def load_table(path: str | Path, model: str | None = None) -> tuple[StreamTable, dict]:
    """What :func:`save_table` wrote: (the table, the rest of its metadata). With ``model`` (an
    identity from :func:`model_identity`), a file made for another model raises ForeignState;
    an unreadable one raises ValueError."""
    tensors, meta = load_tensors(path)
    if meta.pop("kind", None) != KIND:
        raise ValueError(f"streams: expected a file of kind {KIND!r} in {path}, got another")
    if model is not None and meta.get("model") != model:
        raise ForeignState(f"streams: {path} holds the states of another model (identity "
                           f"{str(meta.get('model'))[:12]}, expected {model[:12]}); move it away "
                           "or choose another state path")
    try:
        ids, steps, parked = meta.pop("ids"), meta.pop("steps"), meta.pop("parked")
        parts = tuple(tensors[f"part/{j}"] for j in range(len(tensors)))
        if not len(ids) == len(steps) == len(parked) or any(p.shape[1] != len(ids)
                                                            for p in parts):
            raise ValueError("lengths differ")
    except (KeyError, ValueError, IndexError, TypeError) as error:
        raise ValueError(f"streams: expected ids, steps and states of one length in {path}, "
                         f"got an inconsistent file ({error})") from None
    return StreamTable(list(ids), [int(s) for s in steps], [bool(p) for p in parked],
                       parts), meta


def save_snapshots(path: str | Path, snapshots: dict[str, StreamSnapshot], **meta) -> None:
    """Write ``snapshots`` (stream id -> snapshot, all open) atomically."""
    ids = list(snapshots)
    parts = tuple(torch.stack([snapshots[sid].state[j] for sid in ids], 1)
                  for j in range(len(snapshots[ids[0]].state))) if ids else ()
    save_table(path, StreamTable(ids, [snapshots[s].steps for s in ids], [False] * len(ids),
                                 parts), **meta)


def load_snapshots(path: str | Path) -> tuple[dict[str, StreamSnapshot], dict]:
    """What :func:`save_snapshots` (or a server) wrote: (stream id -> snapshot, metadata)."""
    table, meta = load_table(path)
    return table.snapshots(), meta


def move_aside(path: Path, reason: str) -> Path:
    """Rename an unusable state file (and its journals) out of the way, saying why."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    for wal in journals(path):
        os.replace(wal, wal.with_name(f"{wal.name}.corrupt-{stamp}"))
    log.warning("state file %s is unusable (%s): moved to %s; starting without its streams",
                path, reason, aside)
    return aside


# --- the journal -----------------------------------------------------------------------------

def journals(state_path: str | Path, since: int = 0) -> list[Path]:
    """The journal files of ``state_path`` from generation ``since`` on, oldest first."""
    base = Path(state_path)
    found = []
    for path in base.parent.glob(f"{base.name}.wal.*"):
        suffix = path.name[len(base.name) + 5:]
        if suffix.isdigit() and int(suffix) >= since:
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


class Journal:
    """A write-ahead log of every acknowledged change, for :class:`StreamEngine`'s ``journal``.

    The engine writes a round's records before it changes any state and before any push of the
    round returns, so every acknowledged chunk is in the log. With ``fsync=False`` a record is
    in the operating system when its push returns: a killed server (kill -9, a crash) loses
    nothing acknowledged; a power loss may lose the last moments. With ``fsync=True`` each
    round's records are on disk first (one fsync per round, shared by its streams): nothing
    acknowledged is lost, at the cost of a disk flush per round.

    Args:
        state_path: the state file this journal continues; files are ``STATE.wal.<generation>``.
        generation: the generation to start writing.
        fsync: flush each round's records to disk before its pushes return.
    """

    def __init__(self, state_path: str | Path, generation: int = 0, fsync: bool = False):
        self.base, self.fsync, self.generation = Path(state_path), fsync, generation
        self._file = open(self._path(generation), "ab")  # noqa: SIM115 - held open, closed by close()

    def _path(self, generation: int) -> Path:
        return self.base.with_name(f"{self.base.name}.wal.{generation}")

    def write(self, records: list[tuple]) -> None:
        self._file.write(b"".join(_encode(r) for r in records))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def rotate(self) -> int:
        """Start the next generation; returns it (a state file saved from the engine at this
        moment continues at it)."""
        self._file.close()
        self.generation += 1
        self._file = open(self._path(self.generation), "ab")  # noqa: SIM115
        return self.generation

    def discard_before(self, generation: int) -> None:
        """Remove the journals a saved state file has made redundant."""
        for path in journals(self.base):
            if int(path.name.rsplit(".", 1)[1]) < generation:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()


def read_journal(path: Path) -> list[tuple]:
    """The records of one journal file. A torn last line (a kill during a write, of a change
    that was never acknowledged) is dropped; a damaged line before it raises ValueError."""
    lines = path.read_bytes().split(b"\n")
    records = []
    for k, line in enumerate(lines):
        if not line:
            continue
        try:
            records.append(_decode(json.loads(line)))
        except (ValueError, KeyError, TypeError) as error:
            if k == len(lines) - 1:  # no newline after it: the write did not finish
                log.warning("journal %s: dropped a torn last record", path)
                break
            raise ValueError(f"journal: expected JSON records in {path}, line {k + 1} is "
                             f"damaged ({error})") from None
    return records


def _tensor(t: torch.Tensor) -> dict:
    t = t.detach().cpu().contiguous()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "data": base64.b64encode(t.view(torch.uint8).numpy().tobytes()).decode()}


def _untensor(d: dict) -> torch.Tensor:
    dtype = getattr(torch, d["dtype"])
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {d['dtype']!r}")
    raw = bytearray(base64.b64decode(d["data"], validate=True))
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(d["shape"])


def _encode(record: tuple) -> bytes:
    op, sid = record[0], record[1]
    entry = {"op": op, "id": sid}
    if op == "push":
        entry.update(at=record[2], x=_tensor(record[3]))
    elif op == "open" and record[2] is not None:
        entry.update(steps=record[2].steps, state=[_tensor(t) for t in record[2].state])
    return json.dumps(entry).encode() + b"\n"


def _decode(entry: dict) -> tuple:
    op, sid = entry["op"], entry["id"]
    if op == "push":
        return op, sid, int(entry["at"]), _untensor(entry["x"])
    if op == "open":
        snapshot = None if "state" not in entry else StreamSnapshot(
            tuple(_untensor(t) for t in entry["state"]), int(entry["steps"]))
        return op, sid, snapshot
    if op in ("reset", "close"):
        return op, sid
    raise ValueError(f"unknown op {op!r}")


def replay(engine, records: list[tuple]) -> int:
    """Apply journal records to an engine without a journal; returns how many applied. A push
    whose start step does not match its stream (already in the state file) is skipped."""
    applied = 0
    for record in records:
        op, sid = record[0], record[1]
        known = sid in engine.streams() or sid in engine.parked()
        if op == "push" and known and engine.steps(sid) == record[2]:
            engine.push(sid, record[3])
        elif op == "open" and not known:
            engine.open(sid, record[2])
        elif op == "reset" and known:
            engine.reset(sid)
        elif op == "close" and known:
            engine.close(sid)
        else:
            log.warning("journal: skipped %s of stream %r (already in the state file)", op, sid)
            continue
        applied += 1
    return applied
