"""What an engine has done: counters and recent samples, for a metrics endpoint."""

from __future__ import annotations

import collections
import math
import threading
import time


class EngineStats:
    """Counters and recent samples for a metrics endpoint; updated by the engine."""

    def __init__(self, window: int = 4096):
        self._lock = threading.Lock()
        self.rounds = 0
        self.stream_steps = 0
        self.started = time.monotonic()
        self._batches: collections.deque[int] = collections.deque(maxlen=window)
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=window)

    def record_round(self, batch: int, steps: int) -> None:
        with self._lock:
            self.rounds += 1
            self.stream_steps += steps
            self._batches.append(batch)
            self._recent.append((time.monotonic(), steps))

    def record_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)

    def summary(self, horizon: float = 10.0) -> dict:
        """Totals, stream-steps per second over the last ``horizon`` seconds, batch sizes and
        push latency percentiles (milliseconds) over the recent window."""
        with self._lock:
            now = time.monotonic()
            recent = [s for t, s in self._recent if t >= now - horizon]
            span = min(horizon, now - self.started) or 1.0
            batches, latencies = sorted(self._batches), sorted(self._latencies)
            return {
                "rounds": self.rounds,
                "stream_steps": self.stream_steps,
                "steps_per_second": sum(recent) / span,
                "batch_size": {"mean": sum(batches) / len(batches) if batches else 0.0,
                               "max": batches[-1] if batches else 0},
                "latency_ms": {f"p{q}": _percentile(latencies, q) * 1e3 for q in (50, 90, 99)},
            }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1)]
