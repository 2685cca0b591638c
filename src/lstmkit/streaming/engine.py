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

Legend: S slots (stream capacity), B streams in a round, T steps, F features, L*D state layers.
"""

from __future__ import annotations

import array
import collections
import logging
import threading
import time
import uuid
from typing import NamedTuple

import torch

from lstmkit.cells.base import state_tensors
from lstmkit.models import SequenceModel
from lstmkit.streaming.stats import EngineStats

log = logging.getLogger(__name__)


class UnknownStream(KeyError):
    """A push, reset or close named a stream that is not open."""

    def __str__(self) -> str:
        return str(self.args[0])


class EngineFull(RuntimeError):
    """Opening one more stream would pass ``max_streams``."""


class StreamSnapshot(NamedTuple):
    """A stream's saved state: what eviction keeps and :meth:`StreamEngine.open` restores.

    Shape: each tensor of ``state`` is (L*D, size), the stream's slice of the model's state.
    """

    state: tuple[torch.Tensor, ...]
    steps: int


class _Stream:
    __slots__ = ("id", "slot", "steps", "last_used")

    def __init__(self, stream_id: str, slot: int, steps: int, now: float):
        self.id, self.slot, self.steps, self.last_used = stream_id, slot, steps, now


class _Call:
    """One push or push_many: its requests, and the event its caller waits on."""

    __slots__ = ("remaining", "wake", "lead", "start")

    def __init__(self, requests: list[_Request]):
        self.remaining, self.start = len(requests), time.perf_counter()
        self.wake = threading.Event()  # set when all are finished, or when handed the lead
        self.lead = False
        for request in requests:
            request.call = self

    def finish(self) -> None:
        """One request done (only the leading thread calls this)."""
        self.remaining -= 1
        if not self.remaining:
            self.wake.set()


class _Request:
    __slots__ = ("stream_id", "x", "result", "error", "call")

    def __init__(self, stream_id: str, x: torch.Tensor):
        self.stream_id, self.x = stream_id, x
        self.result: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.call: _Call | None = None


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

    Thread-safe: any number of threads may push at once.

    Examples:
        >>> from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
        >>> model = SequenceModel(ModelConfig(LayerConfig(cell_config("lstm", 3, 8),
        ...                                               batch_first=True), 2))
        >>> engine = StreamEngine(model)
        >>> sid = engine.open()
        >>> tuple(engine.push(sid, torch.zeros(5, 3)).shape)
        (5, 2)
    """

    def __init__(self, model: SequenceModel, *, max_streams: int = 1024,
                 idle_timeout: float | None = None, max_parked: int | None = None,
                 max_batch: int = 1024, max_chunk: int = 4096, clock=time.monotonic):
        _check_model(model)
        for name, value in (("max_streams", max_streams), ("max_batch", max_batch),
                            ("max_chunk", max_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout: expected None or seconds > 0, got {idle_timeout!r}")
        self.model = model.eval()
        self.max_streams, self.idle_timeout, self.max_batch = max_streams, idle_timeout, max_batch
        self.max_parked = max_streams if max_parked is None else max_parked
        self.max_chunk, self._clock = max_chunk, clock
        self._like = next(model.parameters())
        config = model.config
        # Plain attributes, not properties: they are read for every chunk of every round.
        self.vocab_size = config.vocab_size  # > 0: one token id per step
        self.input_size = 0 if config.vocab_size else config.layer.cell.input_size
        self.output_size = config.output_size
        # Lock order: _compute (rounds and anything that writes state slots), then _lock (the
        # tables and the queue, held only briefly).
        self._compute = threading.Lock()
        self._lock = threading.Lock()
        self._busy = False  # some thread is leading rounds
        self._streams: dict[str, _Stream] = {}
        self._parked: collections.OrderedDict[str, StreamSnapshot] = collections.OrderedDict()
        self._pending: collections.deque[_Request] = collections.deque()
        self._free: list[int] = []
        self._slots: tuple[torch.Tensor, ...] = self._new_slots(0)  # each (L*D, S, size)
        self.stats = EngineStats()

    # --- stream lifecycle --------------------------------------------------------------------

    def open(self, stream_id: str | None = None, snapshot: StreamSnapshot | None = None) -> str:
        """Open a stream (a fresh id if None) at the zero state, or at ``snapshot``; returns its
        id. Opening a parked stream's id without a snapshot resumes it."""
        stream_id = uuid.uuid4().hex if stream_id is None else _check_id(stream_id)
        if snapshot is not None:
            snapshot = self._check_snapshot(snapshot)
        with self._compute, self._lock:
            if stream_id in self._streams:
                raise ValueError(f"stream {stream_id!r}: expected a new id, got one already open")
            if snapshot is None:
                snapshot = self._parked.pop(stream_id, None)
            self._parked.pop(stream_id, None)
            self._admit(stream_id, snapshot)
        return stream_id

    def close(self, stream_id: str) -> None:
        """Forget a stream (open or parked); its pending pushes fail with UnknownStream."""
        with self._compute, self._lock:
            if self._parked.pop(stream_id, None) is not None:
                return
            stream = self._get(stream_id)
            del self._streams[stream.id]
            self._free.append(stream.slot)

    def reset(self, stream_id: str) -> None:
        """Set a stream back to the zero state."""
        with self._compute, self._lock:
            stream = self._get(stream_id, restore=True)
            for slots in self._slots:
                slots[:, stream.slot] = 0
            stream.steps, stream.last_used = 0, self._clock()

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
            return self._get(stream_id).steps

    def streams(self) -> list[str]:
        """Ids of the open streams (parked ones not included)."""
        with self._lock:
            return list(self._streams)

    def parked(self) -> list[str]:
        with self._lock:
            return list(self._parked)

    def snapshots(self) -> dict[str, StreamSnapshot]:
        """Every stream's snapshot, open and parked: what a server saves on shutdown."""
        with self._compute, self._lock:
            out = dict(self._parked)
            out.update({s.id: self._snapshot(s) for s in self._streams.values()})
            return out

    # --- pushing -----------------------------------------------------------------------------

    def push(self, stream_id: str, x_chunk) -> torch.Tensor:
        """Feed a stream its next steps; returns the model's output at each of them.

        Args:
            stream_id: an open (or parked) stream.
            x_chunk: (T, I) floats, or (I,) for one step; for a token model (T,) ints, or one int.

        Returns:
            (T, O): the output after each step, equal to the model run on the stream so far.
        """
        return self.push_many({stream_id: x_chunk})[stream_id]

    def push_many(self, chunks: dict) -> dict[str, torch.Tensor]:
        """Push a chunk to each of several streams at once: ``{id: x_chunk}`` -> ``{id: (T, O)}``.

        Every chunk is checked before any is queued, so a bad one fails the call without
        stepping the others. Saves a caller that holds many streams (a gateway, a server's
        batch of messages) one call per stream.
        """
        requests = [_Request(sid, self._check_chunk(x)) for sid, x in chunks.items()]
        if not self.vocab_size and requests:
            self._check_finite(requests)
        call = _Call(requests)
        with self._lock:
            absent = [r.stream_id for r in requests if r.stream_id not in self._streams]
        if absent:  # parked (restore them) or unknown (raise)
            with self._compute, self._lock:
                for stream_id in absent:
                    self._get(stream_id, restore=True)
        with self._lock:
            for request in requests:
                self._get(request.stream_id)
            self._pending.extend(requests)
            lead, self._busy = not self._busy, True
        if not lead:
            call.wake.wait()
            lead = call.lead
        if lead:
            while call.remaining:
                self._round()
            self._hand_off()
        self.stats.record_latency(time.perf_counter() - call.start)
        for request in requests:
            if request.error is not None:
                raise request.error
        return {r.stream_id: r.result for r in requests}

    def _round(self) -> None:
        """Step every stream with a pending chunk once, together; wake the finished callers."""
        with self._compute:
            with self._lock:
                batch = self._take_batch()
            try:
                if batch:
                    self._run(batch)
            except Exception as error:  # a bug or resource error: fail this round's pushes only
                log.exception("stream engine round failed")
                for request, _ in batch:
                    request.error = error
        for request, _ in batch:
            request.call.finish()

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

    def _take_batch(self) -> list[tuple[_Request, _Stream]]:
        batch, seen, keep = [], set(), collections.deque()
        while self._pending:
            request = self._pending.popleft()
            stream = self._streams.get(request.stream_id)
            if stream is None:
                request.error = UnknownStream(f"stream {request.stream_id!r}: expected an open "
                                              "stream, got one closed while the push waited")
                request.call.finish()
            elif request.stream_id in seen or len(batch) == self.max_batch:
                keep.append(request)  # a stream's later chunk waits for its earlier one
            else:
                seen.add(request.stream_id)
                batch.append((request, stream))
        self._pending = keep
        return batch

    @torch.no_grad()
    def _run(self, batch: list[tuple[_Request, _Stream]]) -> None:
        lengths = [request.x.shape[0] for request, _ in batch]
        same = min(lengths) == max(lengths)
        chunks = [r.x for r, _ in batch]
        x = torch.stack(chunks) if same else torch.nn.utils.rnn.pad_sequence(
            chunks, batch_first=True)  # (B, T, F), or (B, T) token ids
        slots = array.array("q", [stream.slot for _, stream in batch])
        index = torch.frombuffer(slots, dtype=torch.int64).to(self._like.device)  # (B,)
        rnn = self.model.rnn
        state = rnn.family.make_state(*(s.index_select(1, index) for s in self._slots))
        features = x if self.model.embedding is None else self.model.embedding(x)
        y, state = rnn(features, state, lengths=None if same else torch.tensor(lengths))
        out = self.model.head(y)  # (B, T, O)
        for slots, new in zip(self._slots, state_tensors(state)):
            slots.index_copy_(1, index, new)
        now = self._clock()
        for k, ((request, stream), rows) in enumerate(zip(batch, out.unbind(0))):
            request.result = rows if same else rows[:lengths[k]]
            stream.steps += lengths[k]
            stream.last_used = now
        self.stats.record_round(len(batch), sum(lengths))

    # --- internals (lock held) ---------------------------------------------------------------

    def _get(self, stream_id: str, restore: bool = False) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None and restore and stream_id in self._parked:
            snapshot = self._parked.pop(stream_id)
            return self._admit(stream_id, snapshot)
        if stream is None:
            raise UnknownStream(f"stream {stream_id!r}: expected an open stream, got an unknown "
                                "or closed id")
        return stream

    def _admit(self, stream_id: str, snapshot: StreamSnapshot | None) -> _Stream:
        if len(self._streams) >= self.max_streams:
            self._sweep()
        if len(self._streams) >= self.max_streams:
            raise EngineFull(f"streams: expected at most {self.max_streams} open, got a request "
                             "for one more (close some or wait for idle ones to be evicted)")
        if not self._free:
            self._grow()
        slot = self._free.pop()
        for k, slots in enumerate(self._slots):
            slots[:, slot] = 0 if snapshot is None else snapshot.state[k]
        stream = _Stream(stream_id, slot, 0 if snapshot is None else snapshot.steps, self._clock())
        self._streams[stream_id] = stream
        return stream

    def _new_slots(self, capacity: int) -> tuple[torch.Tensor, ...]:
        rnn, like = self.model.rnn, self._like
        layers = rnn.config.num_layers * rnn.config.num_directions
        # Normal tensors even if made under inference_mode: pushes from threads outside it
        # update them in place.
        with torch.inference_mode(False):
            return tuple(like.new_zeros(layers, capacity, *shape)
                         for shape in rnn.family.state_shapes(rnn.config.cell))

    def _grow(self) -> None:
        old = self._slots[0].shape[1]
        new = min(self.max_streams, max(8, 2 * old))
        slots = self._new_slots(new)
        for fresh, current in zip(slots, self._slots):
            fresh[:, :old] = current
        self._slots = slots
        self._free.extend(range(new - 1, old - 1, -1))

    def _snapshot(self, stream: _Stream) -> StreamSnapshot:
        return StreamSnapshot(tuple(s[:, stream.slot].clone() for s in self._slots), stream.steps)

    def _evict(self, stream: _Stream) -> StreamSnapshot:
        snapshot = self._snapshot(stream)
        del self._streams[stream.id]
        self._free.append(stream.slot)
        self._parked[stream.id] = snapshot
        while len(self._parked) > self.max_parked:
            dropped, _ = self._parked.popitem(last=False)
            log.warning("stream %r dropped: more than %d parked", dropped, self.max_parked)
        return snapshot

    def _sweep(self) -> list[str]:
        if self.idle_timeout is None:
            return []
        deadline = self._clock() - self.idle_timeout
        idle = [s for s in self._streams.values() if s.last_used <= deadline]
        busy = {r.stream_id for r in self._pending}
        idle = [s for s in idle if s.id not in busy]
        for stream in idle:
            self._evict(stream)
        return [s.id for s in idle]

    # --- validation --------------------------------------------------------------------------

    def check_chunk(self, x_chunk) -> torch.Tensor:
        """``x_chunk`` as the tensor a push takes, or ValueError/TypeError saying what is wrong
        with it: a caller that gathers chunks for :meth:`push_many` checks each alone first."""
        x = self._check_chunk(x_chunk)
        if not self.vocab_size and not bool(torch.isfinite(x).all()):
            raise ValueError("x_chunk: expected finite values, got NaN or infinity")
        return x

    def _check_chunk(self, x_chunk) -> torch.Tensor:
        like = self._like
        if (type(x_chunk) is torch.Tensor and not self.vocab_size and x_chunk.dim() == 2
                and x_chunk.dtype == like.dtype and x_chunk.shape[1] == self.input_size
                and 1 <= x_chunk.shape[0] <= self.max_chunk and x_chunk.device == like.device
                and not x_chunk.requires_grad):
            return x_chunk  # already what a round takes (finiteness is checked per call)
        if self.vocab_size:
            x = _as_tensor(x_chunk, torch.int64, "x_chunk", like.device)
            if x.dim() == 0:
                x = x.reshape(1)
            if x.dim() != 1:
                raise ValueError(f"x_chunk: expected token ids of shape (T,) or one id, got shape "
                                 f"{tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"x_chunk: expected token ids in [0, {self.vocab_size}), got "
                                 f"values in [{int(x.min())}, {int(x.max())}]")
        else:
            x = _as_tensor(x_chunk, like.dtype, "x_chunk", like.device)
            size, shape = self.input_size, tuple(x.shape)
            x = x.reshape(1, -1) if x.dim() == 1 else x
            if x.dim() != 2 or x.shape[1] != size:
                raise ValueError(f"x_chunk: expected shape (T, {size}) or ({size},), got {shape}")
        if not 1 <= x.shape[0] <= self.max_chunk:
            raise ValueError(f"x_chunk: expected 1 to {self.max_chunk} steps, got {x.shape[0]}")
        return x

    def _check_finite(self, requests: list[_Request]) -> None:
        """One check over all chunks of a call; only on failure, one per chunk to name it."""
        if bool(torch.isfinite(torch.cat([r.x for r in requests])).all()):
            return
        bad = [r.stream_id for r in requests if not bool(torch.isfinite(r.x).all())]
        raise ValueError(f"x_chunk: expected finite values, got NaN or infinity (stream "
                         f"{bad[0]!r})")

    def _check_snapshot(self, snapshot: StreamSnapshot) -> StreamSnapshot:
        if not isinstance(snapshot, StreamSnapshot):
            raise TypeError(f"snapshot: expected a StreamSnapshot, got {type(snapshot).__name__}")
        expected = tuple(s[:, 0].shape for s in self._new_slots(1))
        got = tuple(tuple(t.shape) for t in snapshot.state)
        if got != expected:
            raise ValueError(f"snapshot: expected state shapes {expected}, got {got}")
        state = tuple(t.to(self._like) for t in snapshot.state)
        if not all(bool(torch.isfinite(t).all()) for t in state):
            raise ValueError("snapshot: expected finite values, got NaN or infinity")
        return StreamSnapshot(state, int(snapshot.steps))


def _check_model(model) -> None:
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected an lstmkit SequenceModel, got {type(model).__name__}")
    if model.config.layer.bidirectional:
        raise ValueError("model: expected a unidirectional model, got bidirectional=True (the "
                         "reverse direction needs the whole sequence)")
    if model.config.pooling not in ("none", "last"):
        raise ValueError(f"model: expected pooling 'none' or 'last', got "
                         f"{model.config.pooling!r} (it needs the whole sequence)")


def _check_id(stream_id) -> str:
    if not isinstance(stream_id, str) or not 1 <= len(stream_id) <= 128:
        raise ValueError(f"stream_id: expected a str of 1 to 128 characters, got {stream_id!r}")
    return stream_id


def _as_tensor(value, dtype: torch.dtype, name: str, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if dtype == torch.int64 and (value.dtype.is_floating_point or value.dtype == torch.bool):
            raise TypeError(f"{name}: expected integer token ids, got {value.dtype}")
        if value.requires_grad:
            value = value.detach()
        if value.dtype == dtype and value.device == device:
            return value  # the common case, kept cheap: engines check thousands per round
        return value.to(device=device, dtype=dtype)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name}: expected numbers (a tensor, array or nested list), got "
                        f"{type(value).__name__} ({error})") from None
    if dtype == torch.int64 and not (tensor.dtype == torch.int64 or tensor.dtype == torch.int32
                                     or tensor.dtype == torch.int16 or tensor.dtype == torch.uint8):
        raise TypeError(f"{name}: expected integer token ids, got {tensor.dtype}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name}: expected real numbers, got {tensor.dtype}")
    return tensor.to(device=device, dtype=dtype)
