"""Streaming transcription: audio in small chunks through a unidirectional speech checkpoint and
the :class:`~lstmkit.streaming.StreamEngine`.

Each stream keeps its own :class:`~lstmkit.tasks.audio.FeatureStream` (samples not yet framed,
running normalisation) and the frame log-probabilities so far; the engine keeps the recurrent
state. The best path is final frame by frame (a label emitted at frame t never changes), so the
words it has finished are printed as partial transcripts as soon as the next space appears. When
a stream closes, the checkpoint's decoder (greedy, or beam search with the lexicon and bigram)
runs over all its frames: the same computation as decoding the whole file offline, so the final
transcript equals :func:`transcribe_offline` of the same audio.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lstmkit.apps import ctc
from lstmkit.apps.speech import decode
from lstmkit.streaming import StreamEngine
from lstmkit.tasks import audio
from lstmkit.tasks.speech import SAMPLE_RATE, Corpus


def _check(model) -> dict:
    meta = getattr(model, "meta", None) or {}
    if meta.get("app") != "transcribe":
        raise ValueError(f"checkpoint: expected one written by lstmkit transcribe, got "
                         f"{meta.get('app')!r}")
    return meta


def transcribe_offline(model, samples: np.ndarray, decoder: str | None = None) -> str:
    """The transcript of float audio (N,) at :data:`SAMPLE_RATE`, all of it at once."""
    meta = _check(model)
    x = audio.features(samples, audio.FeatureConfig(**meta["features"]), np.array(meta["mean"]),
                       np.array(meta["var"]))
    if not len(x):
        raise ValueError(f"audio: expected at least {_least(meta)} samples, got {len(samples)}")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(x)[None])
    return decode(logits[0].log_softmax(-1).numpy(), meta, decoder)


def _least(meta: dict) -> int:
    f = audio.FeatureConfig(**meta["features"])
    return f.n_fft + (f.subsample - 1) * f.hop


class _Stream:
    def __init__(self, features: audio.FeatureStream):
        self.features, self.frames, self.labels, self.shown = features, [], [], 0


class Transcriber:
    """Many audio streams of one unidirectional speech checkpoint at once.

    Examples:
        Given ``model = lstmkit.load("runs/transcribe/stream")``::

            transcriber = Transcriber(model)
            sid = transcriber.open()
            for chunk in chunks:              # float samples at 16 kHz
                print(transcriber.push(sid, chunk), end="")   # newly finished words
            print(transcriber.close(sid))     # the final transcript
    """

    def __init__(self, model, engine: StreamEngine | None = None, decoder: str | None = None):
        self.meta = _check(model)
        self.engine = StreamEngine(model) if engine is None else engine
        self.decoder = decoder
        self._config = audio.FeatureConfig(**self.meta["features"])
        self._mean, self._var = np.array(self.meta["mean"]), np.array(self.meta["var"])
        self._streams: dict[str, _Stream] = {}

    def open(self) -> str:
        sid = self.engine.open()
        self._streams[sid] = _Stream(audio.FeatureStream(self._config, self._mean, self._var))
        return sid

    def push(self, sid: str, samples: np.ndarray) -> str:
        """Feed float samples; returns the words that became certain with them (each followed
        by a space), or "" when none did."""
        stream = self._streams[sid]
        steps = stream.features.push(samples)
        if len(steps):
            logits = self.engine.push(sid, torch.from_numpy(steps))  # (S, V)
            frames = logits.log_softmax(-1).numpy()
            stream.frames.append(frames)
            stream.labels.extend(frames.argmax(-1).tolist())
        text = ctc.collapse(stream.labels, self.meta["alphabet"])
        # Words followed by a space are finished; appending labels never changes them.
        words = text[:text.rfind(" ")].split() if " " in text else []
        finished = "".join(w + " " for w in words)
        new, stream.shown = finished[stream.shown:], max(stream.shown, len(finished))
        return new

    def close(self, sid: str) -> str:
        """The final transcript of the stream; the stream is closed."""
        stream = self._streams.pop(sid)
        self.engine.close(sid)
        if not stream.frames:
            raise ValueError(f"audio: expected at least {_least(self.meta)} samples, got fewer")
        return decode(np.concatenate(stream.frames), self.meta, self.decoder)


def chunks(samples: np.ndarray, chunk_ms: int):
    size = max(1, SAMPLE_RATE * chunk_ms // 1000)
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def measure_streaming(model, corpus: Corpus, utterances: int, chunk_ms: int = 100) -> dict:
    """Stream the first ``utterances`` of ``corpus`` in ``chunk_ms`` chunks: real-time factor
    (processing seconds per audio second) and mean time per chunk, in wall-clock and in this
    process's CPU time (the two part on a loaded machine), and how many final transcripts equal
    the offline decode."""
    transcriber = Transcriber(model)
    busy, cpu, pushes, seconds, equal = 0.0, 0.0, 0, 0.0, 0
    count = min(utterances, len(corpus))
    for i in range(count):
        samples = corpus.float_audio(i)
        tick, tock = time.perf_counter(), time.process_time()
        sid = transcriber.open()
        for chunk in chunks(samples, chunk_ms):
            transcriber.push(sid, chunk)
            pushes += 1
        final = transcriber.close(sid)
        busy += time.perf_counter() - tick
        cpu += time.process_time() - tock
        seconds += len(samples) / SAMPLE_RATE
        equal += final == transcribe_offline(model, samples)
    return {"utterances": count, "chunk_ms": chunk_ms, "audio_seconds": round(seconds, 1),
            "real_time_factor": busy / max(seconds, 1e-9),
            "cpu_real_time_factor": cpu / max(seconds, 1e-9),
            "ms_per_chunk": 1000 * busy / max(pushes, 1),
            "cpu_ms_per_chunk": 1000 * cpu / max(pushes, 1), "equal_to_offline": equal,
            "threads": torch.get_num_threads()}
