"""The served speech recogniser (``lstmkit serve`` of a ``lstmkit transcribe`` streaming
checkpoint): audio in, transcripts out.

A client pushes PCM samples at the model's rate (:data:`~lstmkit.tasks.audio.SAMPLE_RATE`) in
chunks of any size, as ``{"x": samples}``: a JSON list of floats in [-1, 1], or a base64 string
of little-endian samples, with ``"encoding"`` ``"float32"`` (the default) or ``"int16"`` (which
a list of integers may use too). ``"sample_rate"``, if given, must be the model's. ``"at"``, if
given, is the number of samples the stream must have had before this chunk (else 409), so a
client resending after a lost reply cannot feed audio twice.

Each reply says ``new`` (the words that became certain with this chunk, each followed by a
space), ``partial`` (every certain word so far), ``samples`` and ``steps``. Closing the stream
(``DELETE /streams/{id}``, or ``{"close": true}`` on its WebSocket) answers ``text``: the
checkpoint's decoder over all the stream's frames, which is the offline decode of the same audio.

Unlike the other adapters this one keeps state per stream: the feature front end (samples not
yet framed, the running normalisation, frames not yet stacked) and the frame log-probabilities
for the final decode (:class:`~lstmkit.apps.transcriber.AudioStream`). The engine keeps the
recurrent state. So the server hands each push to :meth:`SpeechAdapter.push`, which runs one
stream's chunks in order, feeds the engine the model steps the chunk completes (none, for a
chunk shorter than a step: the samples wait) and commits the front end only if the engine step
succeeded. The audio side is held in memory: it is not in the server's state file, so a stream
resumed from one after a restart is refused (409) until it is reset.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

import numpy as np
import torch

from lstmkit.streaming.engine import StepMismatch
from lstmkit.tasks.audio import SAMPLE_RATE

ENCODINGS = {"float32": np.dtype("<f4"), "int16": np.dtype("<i2")}


def samples_of(body: dict) -> np.ndarray:
    """The float samples (N,) of a push's body, or a ValueError/TypeError saying what is wrong.

    Examples:
        >>> samples_of({"x": [0.5, -0.25]})
        array([ 0.5 , -0.25])
        >>> samples_of({"x": "AEAAwA==", "encoding": "int16"})  # 16384, -16384
        array([ 0.5, -0.5])
        >>> samples_of({"x": [0.5], "sample_rate": 8000})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: sample_rate: expected 16000 (the model's rate: ...), got 8000
    """
    rate = body.get("sample_rate", SAMPLE_RATE)
    if type(rate) is not int or rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate: expected {SAMPLE_RATE} (the model's rate: resample the "
                         f"audio before sending it), got {rate!r}")
    encoding = body.get("encoding", "float32")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding: expected one of {sorted(ENCODINGS)}, got {encoding!r}")
    dtype, x = ENCODINGS[encoding], body["x"]
    if isinstance(x, str):
        try:
            raw = base64.b64decode(x, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"x: expected base64 of {encoding} samples, got invalid base64 "
                             f"({error})") from None
        if len(raw) % dtype.itemsize:
            raise ValueError(f"x: expected a whole number of {dtype.itemsize}-byte {encoding} "
                             f"samples, got {len(raw)} bytes")
        values = np.frombuffer(raw, dtype).astype(np.float64)
    elif isinstance(x, list):
        try:
            values = np.asarray(x, np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"x: expected a list of numbers (samples), got {error}") from None
        if values.ndim != 1:
            raise ValueError(f"x: expected a flat list of samples (one channel), got shape "
                             f"{values.shape}")
    else:
        raise TypeError(f"x: expected a list of samples or a base64 string, got "
                        f"{type(x).__name__}")
    if not len(values):
        raise ValueError("x: expected at least one sample, got none")
    if not np.isfinite(values).all():
        raise ValueError("x: expected finite samples, got NaN or infinity")
    if dtype.kind == "i":
        if isinstance(x, list) and (np.any(values != np.round(values))
                                    or np.abs(values + 0.5).max() > 32768):
            raise ValueError("x: expected int16 samples (integers in [-32768, 32767]), got "
                             f"values in [{values.min():g}, {values.max():g}]")
        return values / 32768.0
    peak = np.abs(values).max()
    if peak > 1.0:
        raise ValueError(f"x: expected float samples in [-1, 1], got one of {peak:g} (int16 "
                         f"values? send them with \"encoding\": \"int16\")")
    return values


class SpeechAdapter:
    """Audio streams of a unidirectional ``lstmkit transcribe`` checkpoint, through the server.

    The server calls :meth:`bind` once, then :meth:`push`, :meth:`close` and :meth:`reset` for
    the streams' requests (on its event loop), in place of the engine calls it makes for a model
    without per-stream state.
    """

    def __init__(self, meta: dict):
        from lstmkit.apps.transcriber import AudioStream, check_streaming

        self.meta, self._new = check_streaming(meta), AudioStream
        self._streams: dict = {}  # id -> AudioStream, from the first push to close or reset
        self._locks: dict[str, asyncio.Lock] = {}

    def bind(self, engine, push, call) -> None:
        """The server's engine, its batched ``push(id, x, at)`` coroutine and ``call(fn, *args)``,
        which runs ``fn`` in a worker thread."""
        self.engine, self._push, self._call = engine, push, call

    def _lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks.setdefault(stream_id, asyncio.Lock())

    async def push(self, stream_id: str, body: dict, at: int | None) -> dict:
        samples = samples_of(body)  # a bad chunk fails here, before the stream is touched
        async with self._lock(stream_id):
            stream = self._stream(stream_id)
            if at is not None and at != stream.samples:
                raise StepMismatch(f"at: expected the stream's sample count {stream.samples}, "
                                   f"got {at}")
            saved = stream.features.copy(), stream.samples
            steps = stream.feed(samples)
            new = ""
            if len(steps):
                try:
                    # at= the steps this adapter has seen: the engine refuses a stream it moved
                    # on without us, rather than pairing our audio with another state.
                    pushed = await self._push(stream_id, torch.from_numpy(steps), stream.steps)
                except BaseException:
                    stream.features, stream.samples = saved
                    raise
                new = stream.take(pushed.y)
            self._streams[stream_id] = stream
        self._forget_gone()
        return {"new": new, "partial": stream.certain().strip(), "samples": stream.samples,
                "steps": stream.steps}

    def _stream(self, stream_id: str):
        steps = self.engine.steps(stream_id)  # UnknownStream (404) for a stream never opened
        stream = self._streams.get(stream_id)
        if stream is None and steps == 0:
            return self._new(self.meta)
        if stream is None or stream.steps != steps:
            raise StepMismatch(
                f"stream {stream_id!r}: expected a stream whose audio this server has, got one at "
                f"step {steps} without it (the audio front end is held in memory and is not "
                f"restored with the stream after a restart): reset it and send its audio again")
        return stream

    async def close(self, stream_id: str) -> dict:
        """Close the stream; ``text`` is its final transcript ("" if it had too little audio
        for one model step)."""
        async with self._lock(stream_id):
            try:
                await self._call(self.engine.close, stream_id)
            finally:
                stream = self._streams.pop(stream_id, None)
                self._locks.pop(stream_id, None)
            if stream is None or not stream.frames:
                return {"text": "", "samples": 0 if stream is None else stream.samples}
            return {"text": await self._call(stream.final), "samples": stream.samples}

    async def reset(self, stream_id: str) -> None:
        async with self._lock(stream_id):
            await self._call(self.engine.reset, stream_id)
            self._streams.pop(stream_id, None)

    def _forget_gone(self) -> None:
        """Drop the audio of streams the engine no longer has (dropped when parked too long, or
        closed past us), once there are more than it can hold."""
        if len(self._streams) <= self.engine.max_streams + self.engine.max_parked:
            return
        known = set(self.engine.streams()) | set(self.engine.parked())
        for sid in [s for s in self._streams if s not in known]:
            self._streams.pop(sid)
            self._locks.pop(sid, None)
