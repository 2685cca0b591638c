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


def check_streaming(meta: dict) -> dict:
    """``meta`` if it is a streaming checkpoint's, else the ValueError a user should see."""
    if meta.get("kind") == "offline":
        raise ValueError("checkpoint: expected a streaming (unidirectional) transcribe model, "
                         "got the offline (bidirectional) one: use the run's stream/ checkpoint")
    return meta


def transcribe_offline(model, samples: np.ndarray, decoder: str | None = None) -> str:
    """The transcript of float audio (N,) at :data:`SAMPLE_RATE`, all of it at once."""
    meta = _check(model)
    x = audio.features(samples, audio.FeatureConfig(**meta["features"]), np.array(meta["mean"]),
                       np.array(meta["var"]))
    if not len(x):
        raise ValueError(f"audio: expected at least {least_samples(meta)} samples, got "
                         f"{len(samples)}")
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(x)[None])
    return decode(logits[0].log_softmax(-1).numpy(), meta, decoder)


def least_samples(meta: dict) -> int:
    """Samples a checkpoint needs for one model step (one stack of ``subsample`` frames)."""
    f = audio.FeatureConfig(**meta["features"])
    return f.n_fft + (f.subsample - 1) * f.hop


class AudioStream:
    """One stream's audio side: its :class:`~lstmkit.tasks.audio.FeatureStream`, the samples
    fed so far and the frame log-probabilities the model gave for them (the recurrent state lives
    in the engine). Shared by :class:`Transcriber` and the served speech adapter
    (:mod:`lstmkit.streaming.speech`)."""

    def __init__(self, meta: dict):
        self.meta = meta
        self.features = audio.FeatureStream(audio.FeatureConfig(**meta["features"]),
                                            np.array(meta["mean"]), np.array(meta["var"]))
        self.samples, self.steps, self.frames, self.labels, self.shown = 0, 0, [], [], 0

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Float samples (N,) -> the model steps they complete, (S, F) float32 (S may be 0)."""
        steps = self.features.push(samples)
        self.samples += len(samples)
        return steps

    def take(self, logits: torch.Tensor) -> str:
        """Record the model's (S, V) outputs for the last fed steps; returns the words that
        became certain with them (each followed by a space), or ""."""
        frames = logits.log_softmax(-1).numpy()
        self.frames.append(frames)
        self.labels.extend(frames.argmax(-1).tolist())
        self.steps += len(frames)
        finished = self.certain()
        new, self.shown = finished[self.shown:], max(self.shown, len(finished))
        return new

    def certain(self) -> str:
        """The words of the best path so far that are finished (followed by a space): appending
        labels never changes them."""
        text = ctc.collapse(self.labels, self.meta["alphabet"])
        words = text[:text.rfind(" ")].split() if " " in text else []
        return "".join(w + " " for w in words)

    def final(self, decoder: str | None = None) -> str:
        """The checkpoint's decoder over every frame: the offline decode of the same audio."""
        if not self.frames:
            raise ValueError(f"audio: expected at least {least_samples(self.meta)} samples, got "
                             f"{self.samples}")
        return decode(np.concatenate(self.frames), self.meta, decoder)


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
        self.meta = check_streaming(_check(model))
        self.engine = StreamEngine(model) if engine is None else engine
        self.decoder = decoder
        self._streams: dict[str, AudioStream] = {}

    def open(self) -> str:
        sid = self.engine.open()
        self._streams[sid] = AudioStream(self.meta)
        return sid

    def push(self, sid: str, samples: np.ndarray) -> str:
        """Feed float samples; returns the words that became certain with them (each followed
        by a space), or "" when none did."""
        stream = self._streams[sid]
        steps = stream.feed(samples)
        if not len(steps):
            return ""
        return stream.take(self.engine.push(sid, torch.from_numpy(steps)))  # (S, V)

    def close(self, sid: str) -> str:
        """The final transcript of the stream; the stream is closed."""
        stream = self._streams.pop(sid)
        self.engine.close(sid)
        return stream.final(self.decoder)


def chunks(samples: np.ndarray, chunk_ms: int):
    size = max(1, SAMPLE_RATE * chunk_ms // 1000)
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def measure_streaming(model, corpus: Corpus, utterances: int, chunk_ms: int = 100) -> dict:
    """Stream the first ``utterances`` of ``corpus`` in ``chunk_ms`` chunks: real-time factor
    (processing seconds per audio second) and time per chunk, in wall-clock and in this
    process's CPU time (the two part on a loaded machine), the wall-clock latency of a chunk
    (median, 95th percentile, worst) and of the final decode at the end of an utterance, and how
    many final transcripts equal the offline decode."""
    transcriber = Transcriber(model)
    busy, cpu, seconds, equal, latencies, finals = 0.0, 0.0, 0.0, 0, [], []
    count = min(utterances, len(corpus))
    for i in range(count):
        samples = corpus.float_audio(i)
        tock = time.process_time()
        sid = transcriber.open()
        for chunk in chunks(samples, chunk_ms):
            tick = time.perf_counter()
            transcriber.push(sid, chunk)
            latencies.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        final = transcriber.close(sid)
        finals.append(time.perf_counter() - tick)
        cpu += time.process_time() - tock
        seconds += len(samples) / SAMPLE_RATE
        equal += final == transcribe_offline(model, samples)
    busy = sum(latencies) + sum(finals)
    ms = 1000 * np.array(latencies or [0.0])
    return {"utterances": count, "chunk_ms": chunk_ms, "audio_seconds": round(seconds, 1),
            "real_time_factor": busy / max(seconds, 1e-9),
            "cpu_real_time_factor": cpu / max(seconds, 1e-9),
            "ms_per_chunk": 1000 * busy / max(len(latencies), 1),
            "cpu_ms_per_chunk": 1000 * cpu / max(len(latencies), 1),
            "chunk_ms_p50": float(np.percentile(ms, 50)),
            "chunk_ms_p95": float(np.percentile(ms, 95)), "chunk_ms_max": float(ms.max()),
            "final_ms_mean": 1000 * float(np.mean(finals or [0.0])),
            "equal_to_offline": equal, "threads": torch.get_num_threads()}
