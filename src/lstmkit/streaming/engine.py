"""Many live streams through one model: per-stream recurrent state, stepped together in batches.

Each stream holds the state a model carries between chunks of its input. Every :meth:`push`
queues its chunk; a caller that finds no leader becomes the leader and runs rounds: each round
gathers the pending chunk of every stream (one per stream, oldest first), pads them to a batch,
runs the model once with ``lengths=`` so padding never reaches an output or a state, and scatters
the new states back. Callers that arrive during a round wait on their own event and are served by
the next one, so the batch grows with the load (dynamic batching, as Triton's sequence batcher)
without a background thread; once its own chunk is done the leader hands the lead to the oldest
waiting caller.

The model's own ``forward`` does the work (any configuration, any backend), so a stream's outputs
equal running that stream alone through the model, up to float rounding of the batched products.

Legend: S slots (stream capacity), B streams in a round, T steps, F features, A the leading axis
of a state part (L*D layers of a layer stack, 1 for a block stack).
"""

from __future__ import annotations

import array
import collections
import logging
import threading
import time
import uuid

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from lstmkit.cells.base import state_tensors
from lstmkit.layers import RecurrentLayer
from lstmkit.models import SequenceModel
from lstmkit.streaming.checks import as_tensor, check_id, check_model
from lstmkit.streaming.records import (
    ChunkTooLong,
    EngineFull,
    Pushed,
    StepMismatch,
    StreamSnapshot,
    StreamTable,
    UnknownStream,
    _Call,
    _collect,
    _Group,
    _Stream,
)
from lstmkit.streaming.stats import EngineStats

log = logging.getLogger(__name__)


__all__ = ["ChunkTooLong", "EngineFull", "Pushed", "StepMismatch", "StreamEngine",
           "StreamSnapshot", "StreamTable", "UnknownStream"]


# --- the model's state: the only place that knows its structure ------------------------------

class _StateLayout:
    """How one model's state sits in the engine's pool: a tuple of parts, each (A, S, *shape)
    with the streams on axis 1, and the conversions to and from the state the model takes.

    A :class:`~lstmkit.layers.RecurrentLayer` backbone (any registered family) has one part per
    state tensor of its family, each (L*D, B, *shape): ((P,), (H,)) for an LSTM's (h, c),
    (NH, DK, DV) for an mLSTM's matrix memory. Any other backbone (an
    :class:`~lstmkit.layers.xlstm_blocks.xLSTM` block stack: per block its convolution window
    and its cell's state) gives its state as a tree of tuples of tensors (B, ...), as its
    ``init_state(batch)`` makes it; each leaf becomes a part (1, B, ...). Nothing here names a
    family: the structure comes from the model.
    """

    def __init__(self, model: SequenceModel):
        rnn = model.rnn
        if isinstance(rnn, RecurrentLayer):
            self.family, self._spec = rnn.family, None
            layers = rnn.num_layers * rnn.config.num_directions
            self.shapes = tuple((layers,) + shape
                                for shape in rnn.family.state_shapes(rnn.config.cell))
        else:
            leaves, self._spec = tree_flatten(rnn.init_state(1))
            self.family, self.shapes = None, tuple((1,) + tuple(t.shape[1:]) for t in leaves)

    def to_state(self, parts: tuple[torch.Tensor, ...]):
        """The model's state from the pool's parts (each (A, B, *shape))."""
        if self.family is not None:
            return self.family.make_state(*parts)
        return tree_unflatten([p[0] for p in parts], self._spec)

    def from_state(self, state) -> tuple[torch.Tensor, ...]:
        """The parts of the model's state, in :attr:`shapes` order."""
        if self.family is not None:
            return state_tensors(state)
        return tuple(t.unsqueeze(0) for t in tree_flatten(state)[0])


class StreamEngine:
    """Serve many streams of one :class:`~lstmkit.models.SequenceModel` at once.

    Args:
        model: a unidirectional model whose pooling is "none" (an output per step) or "last" (the
            output after each step is the prediction for the prefix so far).
        max_streams: streams open at once; opening more evicts idle ones first, then raises
            :class:`EngineFull`.
        idle_timeout: seconds without a push after which :meth:`sweep` evicts a stream (None:
            never). An evicted stream is parked: its next push restores it.
        max_parked: parked snapshots kept; the oldest are dropped (those streams are then gone).
        max_batch: streams stepped together in one round at most.
        max_chunk: steps in one push at most.
        clock: the time source for idle timeouts (tests pass a fake one).
        journal: an object whose ``write(records)`` is called, inside the round and before any
            state changes, with what every acknowledged change did (``("push", id, at, x)``,
            ``("reset", id)``, ``("open", id, snapshot or None)``, ``("close", id)``), and whose
            ``rotate()`` :meth:`export` calls; if ``write`` raises, those changes fail and
            nothing moves (:class:`lstmkit.streaming.store.Journal` is one).

    Thread-safe: any number of threads may push at once. A failure in one stream (closed
    meanwhile, a non-finite result, a wrong ``at``) leaves every other stream of its round
    exactly as if it had not been there; a chunk is stepped once or not at all.

    Examples:
        >>> from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
        >>> model = SequenceModel(ModelConfig(LayerConfig(cell_config("lstm", 3, 8),
        ...                                               batch_first=True), 2))
        >>> engine = StreamEngine(model)
        >>> sid = engine.open()
        >>> tuple(engine.push(sid, torch.zeros(5, 3)).shape)
        (5, 2)
        >>> engine.push_each({sid: torch.zeros(2, 3), "nope": torch.zeros(1, 3)})["nope"]
        UnknownStream("stream 'nope': expected an open stream, got an unknown or closed id")
    """

    def __init__(self, model: SequenceModel, *, max_streams: int = 1024,
                 idle_timeout: float | None = None, max_parked: int | None = None,
                 max_batch: int = 1024, max_chunk: int = 4096, clock=time.monotonic,
                 journal=None):
        check_model(model)
        for name, value in (("max_streams", max_streams), ("max_batch", max_batch),
                            ("max_chunk", max_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout: expected None or seconds > 0, got {idle_timeout!r}")
        self.model = model.eval()
        self.max_streams, self.idle_timeout, self.max_batch = max_streams, idle_timeout, max_batch
        self.max_parked = max_streams if max_parked is None else max_parked
        self.max_chunk, self._clock, self.journal = max_chunk, clock, journal
        self._like = next(model.parameters())
        config = model.config
        # Plain attributes, not properties: they are read for every chunk of every round.
        self.vocab_size = config.vocab_size  # > 0: one token id per step
        self.input_size = 0 if config.vocab_size else model.rnn.input_size
        self.output_size = config.output_size
        self._layout = _StateLayout(model)
        # Lock order: _compute (rounds and anything that writes state slots), then _lock (the
        # tables and the queue, held only briefly).
        self._compute = threading.Lock()
        self._lock = threading.Lock()
        self._busy = False  # some thread is leading rounds
        self._streams: dict[str, _Stream] = {}
        self._parked: collections.OrderedDict[str, StreamSnapshot] = collections.OrderedDict()
        self._pending: collections.deque[_Group] = collections.deque()
        self._free: list[int] = []
        self._pool: tuple[torch.Tensor, ...] = self._new_pool(0)  # each (A, S, *shape)
        self._count = np.zeros(0, np.int64)  # (S,) steps of the stream in each slot
        self._last = np.zeros(0)  # (S,) the clock at its last push
        self.stats = EngineStats()

    # --- stream lifecycle --------------------------------------------------------------------

    def open(self, stream_id: str | None = None, snapshot: StreamSnapshot | None = None) -> str:
        """Open a stream (a fresh id if None) at the zero state, or at ``snapshot``; returns its
        id. Opening a parked stream's id without a snapshot resumes it."""
        stream_id = uuid.uuid4().hex if stream_id is None else check_id(stream_id)
        if snapshot is not None:
            snapshot = self._check_snapshot(snapshot)
        with self._compute, self._lock:
            if stream_id in self._streams:
                raise ValueError(f"stream {stream_id!r}: expected a new id, got one already open")
            if snapshot is None and stream_id in self._parked:
                self._get(stream_id, restore=True)
                return stream_id
            self._make_room()
            self._write(("open", stream_id, snapshot))
            self._parked.pop(stream_id, None)
            self._admit(stream_id, snapshot)
        return stream_id

    def close(self, stream_id: str) -> None:
        """Forget a stream (open or parked); its pending pushes fail with UnknownStream."""
        with self._compute, self._lock:
            if stream_id not in self._parked:
                self._get(stream_id)
            self._write(("close", stream_id))
            if self._parked.pop(stream_id, None) is not None:
                return
            stream = self._streams.pop(stream_id)
            self._free.append(stream.slot)

    def reset(self, stream_id: str) -> None:
        """Set a stream back to the zero state."""
        with self._compute, self._lock:
            stream = self._get(stream_id, restore=True)
            self._write(("reset", stream_id))
            for part in self._pool:
                part[:, stream.slot] = 0
            self._count[stream.slot], self._last[stream.slot] = 0, self._clock()

    def snapshot(self, stream_id: str) -> StreamSnapshot:
        """A copy of a stream's state (open or parked)."""
        with self._compute, self._lock:
            if stream_id in self._parked:
                return self._parked[stream_id]
            return self._snapshot(self._get(stream_id))

    def evict(self, stream_id: str) -> StreamSnapshot:
        """Free a stream's slot and park its state; its next push or open restores it."""
        with self._compute, self._lock:
            return self._evict(self._get(stream_id))

    def sweep(self) -> list[str]:
        """Evict every stream idle for longer than ``idle_timeout``; returns their ids."""
        with self._compute, self._lock:
            return self._sweep()

    def steps(self, stream_id: str) -> int:
        """Steps a stream (open or parked) has taken since it was opened or reset."""
        with self._lock:
            if stream_id in self._parked:
                return self._parked[stream_id].steps
            return int(self._count[self._get(stream_id).slot])

    def streams(self) -> list[str]:
        """Ids of the open streams (parked ones not included)."""
        with self._lock:
            return list(self._streams)

    def parked(self) -> list[str]:
        with self._lock:
            return list(self._parked)

    def snapshots(self) -> dict[str, StreamSnapshot]:
        """Every stream's snapshot, open and parked."""
        return self.export()[0].snapshots()

    def export(self) -> tuple[StreamTable, object]:
        """Every stream, open and parked, in bulk: what a server saves; and what the journal's
        ``rotate()`` returned (None without a journal), taken at the same moment.

        The engine is held for one copy of each state part, not for a copy per stream.
        """
        with self._compute, self._lock:
            open_ = list(self._streams.values())
            index = torch.tensor([s.slot for s in open_], dtype=torch.int64,
                                 device=self._like.device)
            parts = tuple(p.index_select(1, index) for p in self._pool)
            parked = list(self._parked.items())  # snapshots are never written in place
            steps = self._count[index.cpu().numpy()].tolist()
            mark = None if self.journal is None else self.journal.rotate()
        if parked:
            parts = tuple(torch.cat([p, torch.stack([snap.state[j] for _, snap in parked], 1)], 1)
                          for j, p in enumerate(parts))
        table = StreamTable([s.id for s in open_] + [sid for sid, _ in parked],
                            steps + [snap.steps for _, snap in parked],
                            [False] * len(open_) + [True] * len(parked), parts)
        return table, mark

    def load(self, table: StreamTable) -> None:
        """Add the streams of ``table`` (as :meth:`export` made it): its open ones open while
        ``max_streams`` allows, the rest parked (the oldest dropped past ``max_parked``)."""
        snapshots = table.snapshots()
        for sid, parked in zip(table.ids, table.parked):
            snapshot = self._check_snapshot(snapshots[sid])
            with self._compute, self._lock:
                if sid in self._streams or sid in self._parked:
                    raise ValueError(f"stream {sid!r}: expected a new id, got one already open")
                if parked or len(self._streams) >= self.max_streams:
                    self._park(sid, snapshot)
                else:
                    self._admit(check_id(sid), snapshot)

    # --- pushing -----------------------------------------------------------------------------

    def push(self, stream_id: str, x_chunk, at: int | None = None) -> torch.Tensor:
        """Feed a stream its next steps; returns the model's output at each of them.

        Args:
            stream_id: an open (or parked) stream.
            x_chunk: (T, I) floats, or (I,) for one step; for a token model (T,) ints, or one int.
            at: if given, the step count the stream must be at (else :class:`StepMismatch`):
                a client resending after a crash cannot apply a chunk twice.

        Returns:
            (T, O): the output after each step, equal to the model run on the stream so far.
        """
        groups, _ = self._submit([stream_id], [self._check_chunk(x_chunk)],
                                 None if at is None else [at], strict=True)
        outcome = _collect(groups)[stream_id]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome.y

    def push_many(self, chunks: dict) -> dict[str, torch.Tensor]:
        """Push a chunk to each of several streams at once: ``{id: x_chunk}`` -> ``{id: (T, O)}``.

        A malformed chunk or an unknown stream fails the call before anything is stepped. A
        stream that fails in the round (closed meanwhile, a non-finite result) raises its error
        after the others were stepped; the error's ``results`` holds theirs ({id: (T, O)}) and
        its ``errors`` every failure ({id: exception}). Saves a caller that holds many streams
        (a gateway, a server's batch of messages) one call per stream.
        """
        ids, xs = list(chunks), list(chunks.values())
        stacked = self._stacked(xs)  # one check for a whole batch of well-formed tensors
        if stacked is None:
            xs = [self._check_chunk(x) for x in xs]
        groups, _ = self._submit(ids, xs, None, strict=True, stacked=stacked)
        results, errors = {}, {}
        for group in groups:
            if group.out is not None and not group.errors and group.lengths is None:
                results.update(zip(group.ids, group.out.unbind(0)))  # the common case, fast
                continue
            for sid, outcome in _collect([group]).items():
                if isinstance(outcome, BaseException):
                    errors[sid] = outcome
                else:
                    results[sid] = outcome.y
        if errors:
            first = next(iter(errors.values()))
            first.results, first.errors = results, errors
            raise first
        return results

    def push_each(self, chunks: dict, at: dict | None = None) -> dict:
        """Push a chunk to each of several streams, each failing alone: ``{id: x_chunk}`` ->
        ``{id: Pushed(y, steps) or the exception that stream's push raised}``.

        Args:
            chunks: stream id -> chunk, as :meth:`push` takes.
            at: stream id -> the step count that stream must be at (see :meth:`push`).
        """
        outcomes, ids, xs, ats = {}, [], [], None if at is None else []
        for sid, x in chunks.items():
            try:
                xs.append(self._check_chunk(x))
            except (ValueError, TypeError) as error:
                outcomes[sid] = error
                continue
            ids.append(sid)
            if ats is not None:
                ats.append(at.get(sid))
        groups, failed = self._submit(ids, xs, ats, strict=False)
        outcomes.update(failed)
        outcomes.update(_collect(groups))
        return {sid: outcomes[sid] for sid in chunks}

    def _submit(self, ids: list[str], xs: list[torch.Tensor], ats, strict: bool,
                stacked: torch.Tensor | None = None) -> tuple[list[_Group], dict]:
        """Queue the chunks, lead rounds or wait for them; the groups as the rounds left them,
        and the streams that failed before queueing ({id: error}). ``stacked``: the chunks
        already stacked (B, T, F), if they were all well-formed tensors."""
        outcomes = {}
        with self._lock:
            absent = [sid for sid in ids if sid not in self._streams]
            if not absent:
                call, lead = self._enqueue(ids, xs, ats, stacked)
        if absent:  # parked (restored in the same hold as queueing: no sweep between) or unknown
            with self._compute, self._lock:
                for sid in absent:
                    try:
                        self._get(sid, restore=True)
                    except (UnknownStream, EngineFull) as error:
                        if strict:
                            raise
                        outcomes[sid] = error
                if outcomes:
                    keep = [k for k, sid in enumerate(ids) if sid not in outcomes]
                    ids, xs = [ids[k] for k in keep], [xs[k] for k in keep]
                    ats = None if ats is None else [ats[k] for k in keep]
                    stacked = None
                call, lead = self._enqueue(ids, xs, ats, stacked)
        if not ids:
            return [], outcomes
        if not lead:
            call.wake.wait()
            lead = call.lead
        if lead:
            while call.remaining:
                self._round()
            self._hand_off()
        self.stats.record_latency(time.perf_counter() - call.start)
        return call.groups, outcomes

    def _enqueue(self, ids, xs, ats, stacked) -> tuple[_Call, bool]:
        """(lock held) Queue the chunks in groups of at most max_batch; whether to lead."""
        size = self.max_batch
        call = _Call(-(-len(ids) // size))
        call.groups = [_Group(call, ids[k:k + size], xs[k:k + size],
                              None if ats is None else ats[k:k + size],
                              None if stacked is None else stacked[k:k + size])
                       for k in range(0, len(ids), size)]
        self._pending.extend(call.groups)
        lead, self._busy = not self._busy and bool(ids), self._busy or bool(ids)
        return call, lead

    def _round(self) -> None:
        """Step every stream with a pending chunk once, together; wake the finished callers."""
        with self._compute:
            with self._lock:
                batch, done = self._take_batch()
            try:
                if batch:
                    self._run(batch)
            except Exception as error:  # a bug or resource error: fail this round's pushes only
                log.exception("stream engine round failed")
                for group in batch:
                    group.fail(error)
        for group in batch + done:
            group.call.finish()

    def _hand_off(self) -> None:
        """Pass the lead to the oldest waiting call, so that no caller serves others forever
        and only one thread wakes per round besides those whose pushes finished."""
        with self._lock:
            if self._pending:
                successor = self._pending[0].call
                successor.lead = True
                successor.wake.set()
            else:
                self._busy = False

    def _take_batch(self) -> tuple[list[_Group], list[_Group]]:
        """(both locks held) The groups of this round, and those that failed whole. A group
        waits if it names a stream that an earlier waiting group names (order per stream) or
        if it would pass max_batch."""
        batch, done, seen, keep, size = [], [], set(), collections.deque(), 0
        while self._pending:
            group = self._pending.popleft()
            if (batch and size + len(group.ids) > self.max_batch) or not seen.isdisjoint(
                    group.ids):
                keep.append(group)
                seen.update(group.ids)
                continue
            seen.update(group.ids)
            streams = list(map(self._streams.get, group.ids))
            if None in streams or group.ats is not None:
                streams = self._resolve(group, streams)
            group.streams = streams
            if streams:
                batch.append(group)
                size += len(streams)
            else:
                done.append(group)
        self._pending = keep
        return batch, done

    def _resolve(self, group: _Group, streams: list) -> list[_Stream]:
        """A group's streams that can step: those evicted meanwhile restored, those closed
        meanwhile or at another step than ``at`` failed alone."""
        live = []
        for k, (sid, stream) in enumerate(zip(group.ids, streams)):
            try:
                if stream is None:
                    if sid not in self._parked:
                        raise UnknownStream(f"stream {sid!r}: expected an open stream, got one "
                                            "closed while the push waited")
                    stream = self._get(sid, restore=True)
                at = None if group.ats is None else group.ats[k]
                if at is not None and at != self._count[stream.slot]:
                    raise StepMismatch(f"at: expected the stream's step count "
                                       f"{self._count[stream.slot]}, "
                                       f"got {at}")
            except (UnknownStream, EngineFull, StepMismatch) as error:
                group.errors[k] = error
                continue
            live.append(k)
        group.live, group.stacked = live, None
        group.xs = [group.xs[k] for k in live]
        return [self._streams[group.ids[k]] for k in live]

    @torch.no_grad()
    def _run(self, batch: list[_Group]) -> None:
        if len(batch) == 1 and batch[0].stacked is not None:  # one well-formed call: as is
            streams, chunks, x = batch[0].streams, batch[0].xs, batch[0].stacked
            lengths, same = [x.shape[1]] * len(streams), True
        else:
            streams = [s for group in batch for s in group.streams]
            chunks = [x for group in batch for x in group.xs]
            lengths = [x.shape[0] for x in chunks]
            same = min(lengths) == max(lengths)
            x = torch.stack(chunks) if same else torch.nn.utils.rnn.pad_sequence(
                chunks, batch_first=True)  # (B, T, F), or (B, T) token ids
        slots = array.array("q", [stream.slot for stream in streams])
        index = torch.frombuffer(slots, dtype=torch.int64).to(self._like.device)  # (B,)
        model = self.model
        state = self._layout.to_state(tuple(p.index_select(1, index) for p in self._pool))
        if same and x.shape[1] == 1 and isinstance(model.rnn, RecurrentLayer):
            # One step each: the model's step, which for a few float32 streams is one compiled
            # call for the stack and the head (layers/fused_step.py), not a sequence's call.
            out, state = model.step(x[:, 0], state)
            out = out[:, None]  # (B, 1, O)
        else:
            features = x if model.embedding is None else model.embedding(x)
            y, state = model.rnn(features, state, lengths=None if same else torch.tensor(lengths))
            out = model.head(y)  # (B, T, O)
        new = self._layout.from_state(state)  # each (A, B, *shape)
        bad = self._bad_rows(x, out, new)
        if bad:
            keep = [b for b in range(len(streams)) if b not in bad]
            good = torch.tensor(keep, dtype=torch.int64, device=index.device)
            index, new = index[good], tuple(p.index_select(1, good) for p in new)
        slots = np.frombuffer(slots, dtype=np.int64)  # (B,)
        if self.journal is not None:
            self._write(*(("push", s.id, int(self._count[s.slot]), c) for b, (s, c) in
                          enumerate(zip(streams, chunks)) if b not in bad))
        for part, fresh in zip(self._pool, new):
            part.index_copy_(1, index, fresh)
        self._deliver(batch, out, slots, None if same else lengths, x.shape[1], bad)
        self.stats.record_round(len(streams) - len(bad), sum(lengths))

    def _deliver(self, batch: list[_Group], out: torch.Tensor, slots: np.ndarray, lengths,
                 steps: int, bad: dict) -> None:
        """Count the steps (one vectorised update) and hand each group its rows; streams in
        ``bad`` fail alone, their counts unchanged."""
        if lengths is None and not bad:  # the common case: one length, all stepped
            self._count[slots] += steps  # slots are distinct within a round
            self._last[slots] = self._clock()
        else:
            taken = np.full(len(slots), steps) if lengths is None else np.asarray(lengths)
            if bad:
                taken[list(bad)] = 0
            self._count[slots] += taken
            self._last[slots[taken > 0]] = self._clock()
        after, offset = self._count[slots], 0  # (B,) a copy: later rounds do not move it
        for group in batch:
            n = len(group.streams)
            group.out = out[offset:offset + n]
            group.lengths = None if lengths is None else lengths[offset:offset + n]
            group.steps = after[offset:offset + n]
            if bad:
                positions = group.positions()
                for j in range(n):
                    if offset + j in bad:
                        group.errors[positions[j]] = bad[offset + j]
            offset += n

    def _bad_rows(self, x: torch.Tensor, out: torch.Tensor, parts) -> dict[int, ValueError]:
        """Rows whose input, output or new state is not finite (checked in one pass of
        vectorised calls); none, in the common case."""
        total = out.sum()  # one cheap pass: NaN or inf anywhere makes it non-finite
        for t in parts if self.vocab_size else (*parts, x):
            total = total + t.sum()
        if bool(torch.isfinite(total)):
            return {}
        rows = out.shape[0]  # then row by row (a sum of finite values may overflow alone)
        ok = torch.isfinite(out).reshape(rows, -1).all(1)  # (B,)
        for part in parts:  # (A, B, *shape)
            ok &= torch.isfinite(part).reshape(part.shape[0], rows, -1).all(2).all(0)
        finite_x = None
        if not self.vocab_size:
            finite_x = torch.isfinite(x).reshape(rows, -1).all(1)
            ok &= finite_x
        if bool(ok.all()):
            return {}
        bad = {}
        for b in (~ok).nonzero().flatten().tolist():
            if finite_x is not None and not bool(finite_x[b]):
                bad[b] = ValueError("x_chunk: expected finite values, got NaN or infinity")
            else:
                bad[b] = ValueError("x_chunk: expected values the model keeps finite, got ones "
                                    "that make its output or state non-finite (overflow); the "
                                    "stream's state is unchanged")
        return bad

    # --- internals (lock held) ---------------------------------------------------------------

    def _write(self, *records) -> None:
        if self.journal is not None and records:
            self.journal.write(list(records))

    def _get(self, stream_id: str, restore: bool = False) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None and restore and stream_id in self._parked:
            self._make_room()  # before the snapshot leaves the parked table: nothing is lost
            return self._admit(stream_id, self._parked.pop(stream_id))
        if stream is None:
            raise UnknownStream(f"stream {stream_id!r}: expected an open stream, got an unknown "
                                "or closed id")
        return stream

    def _make_room(self) -> None:
        if len(self._streams) >= self.max_streams:
            self._sweep()
        if len(self._streams) >= self.max_streams:
            raise EngineFull(f"streams: expected at most {self.max_streams} open, got a request "
                             "for one more (close some or wait for idle ones to be evicted)")

    def _admit(self, stream_id: str, snapshot: StreamSnapshot | None) -> _Stream:
        """(room made) Give a stream a slot, at ``snapshot`` or the zero state."""
        if not self._free:
            self._grow()
        slot = self._free.pop()
        for k, part in enumerate(self._pool):
            part[:, slot] = 0 if snapshot is None else snapshot.state[k]
        self._count[slot] = 0 if snapshot is None else snapshot.steps
        self._last[slot] = self._clock()
        stream = _Stream(stream_id, slot)
        self._streams[stream_id] = stream
        return stream

    def _new_pool(self, capacity: int) -> tuple[torch.Tensor, ...]:
        # Normal tensors even if made under inference_mode: pushes from threads outside it
        # update them in place.
        with torch.inference_mode(False):
            return tuple(self._like.new_zeros(shape[:1] + (capacity,) + shape[1:])
                         for shape in self._layout.shapes)

    def _grow(self) -> None:
        old = self._pool[0].shape[1]
        new = min(self.max_streams, max(8, 2 * old))
        pool = self._new_pool(new)
        for fresh, current in zip(pool, self._pool):
            fresh[:, :old] = current
        self._pool = pool
        self._count = np.concatenate([self._count, np.zeros(new - old, np.int64)])
        self._last = np.concatenate([self._last, np.zeros(new - old)])
        self._free.extend(range(new - 1, old - 1, -1))

    def _snapshot(self, stream: _Stream) -> StreamSnapshot:
        return StreamSnapshot(tuple(p[:, stream.slot].clone() for p in self._pool),
                              int(self._count[stream.slot]))

    def _evict(self, stream: _Stream) -> StreamSnapshot:
        snapshot = self._snapshot(stream)
        del self._streams[stream.id]
        self._free.append(stream.slot)
        self._park(stream.id, snapshot)
        return snapshot

    def _park(self, stream_id: str, snapshot: StreamSnapshot) -> None:
        self._parked[stream_id] = snapshot
        while len(self._parked) > self.max_parked:
            dropped, _ = self._parked.popitem(last=False)
            log.warning("stream %r dropped: more than %d parked", dropped, self.max_parked)

    def _sweep(self) -> list[str]:
        if self.idle_timeout is None:
            return []
        deadline = self._clock() - self.idle_timeout
        idle = [s for s in self._streams.values() if self._last[s.slot] <= deadline]
        if idle and self._pending:
            busy = {sid for group in self._pending for sid in group.ids}
            idle = [s for s in idle if s.id not in busy]
        for stream in idle:
            self._evict(stream)
        return [s.id for s in idle]

    # --- validation --------------------------------------------------------------------------

    def check_chunk(self, x_chunk, finite: bool = True) -> torch.Tensor:
        """``x_chunk`` as the tensor a push takes, or ValueError/TypeError saying what is wrong
        with it: a caller that gathers chunks for :meth:`push_many` checks each alone first.
        ``finite=False`` leaves the finite check to the round (which fails that stream alone)."""
        x = self._check_chunk(x_chunk)
        if finite and not self.vocab_size and not bool(torch.isfinite(x).all()):
            raise ValueError("x_chunk: expected finite values, got NaN or infinity")
        return x

    def _stacked(self, xs: list) -> torch.Tensor | None:
        """The chunks stacked (B, T, F) if they are all float tensors of the model's dtype,
        device and input size, of one length within max_chunk; else None (then each is checked
        alone, for a precise error)."""
        like = self._like
        if self.vocab_size or not xs:
            return None
        try:
            x = torch.stack(xs)
        except (TypeError, RuntimeError):  # not all tensors, or of several shapes
            return None
        if (x.dim() == 3 and x.dtype == like.dtype and x.shape[2] == self.input_size
                and 1 <= x.shape[1] <= self.max_chunk and x.device == like.device
                and not x.requires_grad):
            return x
        return None

    def _check_chunk(self, x_chunk) -> torch.Tensor:
        like = self._like
        if (type(x_chunk) is torch.Tensor and not self.vocab_size and x_chunk.dim() == 2
                and x_chunk.dtype == like.dtype and x_chunk.shape[1] == self.input_size
                and 1 <= x_chunk.shape[0] <= self.max_chunk and x_chunk.device == like.device
                and not x_chunk.requires_grad):
            return x_chunk  # already what a round takes (finiteness is checked in the round)
        if self.vocab_size:
            x = as_tensor(x_chunk, torch.int64, "x_chunk", like.device)
            if x.dim() == 0:
                x = x.reshape(1)
            if x.dim() != 1:
                raise ValueError(f"x_chunk: expected token ids of shape (T,) or one id, got shape "
                                 f"{tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"x_chunk: expected token ids in [0, {self.vocab_size}), got "
                                 f"values in [{int(x.min())}, {int(x.max())}]")
        else:
            x = as_tensor(x_chunk, like.dtype, "x_chunk", like.device)
            size, shape = self.input_size, tuple(x.shape)
            x = x.reshape(1, -1) if x.dim() == 1 else x
            if x.dim() != 2 or x.shape[1] != size:
                raise ValueError(f"x_chunk: expected shape (T, {size}) or ({size},), got {shape}")
        if x.shape[0] < 1:
            raise ValueError(f"x_chunk: expected 1 to {self.max_chunk} steps, got 0")
        if x.shape[0] > self.max_chunk:
            raise ChunkTooLong(f"x_chunk: expected 1 to {self.max_chunk} steps, got "
                               f"{x.shape[0]}")
        return x

    def _check_snapshot(self, snapshot: StreamSnapshot) -> StreamSnapshot:
        if not isinstance(snapshot, StreamSnapshot):
            raise TypeError(f"snapshot: expected a StreamSnapshot, got {type(snapshot).__name__}")
        expected = self._layout.shapes
        got = tuple(tuple(t.shape) for t in snapshot.state)
        if got != expected:
            raise ValueError(f"snapshot: expected state shapes {expected}, got {got}")
        state = tuple(t.to(self._like) for t in snapshot.state)
        if not all(bool(torch.isfinite(t).all()) for t in state):
            raise ValueError("snapshot: expected finite values, got NaN or infinity")
        return StreamSnapshot(state, int(snapshot.steps))
