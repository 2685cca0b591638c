"""The engine under races, faults and hostile input: a failure in one stream leaves every other
stream exactly as if that stream had not been in the batch, and nothing is lost or stepped twice.
Regression tests for issue 10, defects 1, 3, 4 and 11."""

import pytest
import torch

from lstmkit import cell_config
from lstmkit.streaming import EngineFull, StreamEngine, UnknownStream
from tests.tiny_models import forecaster, make_model


def _offline(model, x):
    with torch.no_grad():
        return model.head(model.rnn(x[None])[0])[0]


class _Hooked:
    """The engine's compute lock, calling ``before`` just before each acquire and ``after``
    just after each release (not from inside themselves): the moments a concurrent close or
    sweep gets in."""

    def __init__(self, engine, before=None, after=None):
        self.lock, self.before, self.after, self.inside = engine._compute, before, after, False
        engine._compute = self

    def _hook(self, fn):
        if fn is not None and not self.inside:
            self.inside = True
            try:
                fn()
            finally:
                self.inside = False

    def __enter__(self):
        self._hook(self.before)
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()
        self._hook(self.after)

    def locked(self):
        return self.lock.locked()


def test_a_close_racing_a_batched_push_fails_that_stream_alone_and_steps_the_others_once():
    model = forecaster()
    engine = StreamEngine(model)
    ids = [engine.open(f"s{k}") for k in range(4)]
    xs = {sid: torch.randn(3, 3) for sid in ids}
    closed = []

    def close_s2_once():  # after the push is queued, before its round takes it
        if not closed and engine._pending:
            closed.append(engine.close("s2"))

    _Hooked(engine, before=close_s2_once)
    with pytest.raises(UnknownStream, match="'s2'") as caught:
        engine.push_many(xs)
    assert closed
    for sid in ("s0", "s1", "s3"):  # stepped once, their results kept
        torch.testing.assert_close(caught.value.results[sid], _offline(model, xs[sid]),
                                   rtol=1e-5, atol=1e-5)
        assert engine.steps(sid) == 3
    assert list(caught.value.errors) == ["s2"]


def test_push_each_returns_each_streams_outcome():
    model = forecaster()
    engine = StreamEngine(model)
    a, b, _ = engine.open("a"), engine.open("b"), engine.open("nan")
    x = torch.randn(4, 3)
    out = engine.push_each({"a": x, "b": x, "gone": x, "nan": [[float("nan")] * 3],
                            "bad": [[1.0]]})
    assert isinstance(out["gone"], UnknownStream) and isinstance(out["bad"], ValueError)
    assert "expected finite values" in str(out["nan"]) and engine.steps("nan") == 0
    for sid in (a, b):
        torch.testing.assert_close(out[sid].y, _offline(model, x), rtol=1e-5, atol=1e-5)
        assert out[sid].steps == 4


def test_a_parked_stream_survives_a_push_or_open_that_finds_the_engine_full():
    model = forecaster()
    engine = StreamEngine(model, max_streams=1)
    x = torch.randn(6, 3)
    head = engine.push(engine.open("a"), x[:3])
    engine.evict("a")
    engine.open("b")
    with pytest.raises(EngineFull):
        engine.push("a", x[3:])
    with pytest.raises(EngineFull):
        engine.open("a")
    assert engine.parked() == ["a"] and engine.steps("a") == 3
    engine.close("b")
    tail = engine.push("a", x[3:])
    torch.testing.assert_close(torch.cat([head, tail]), _offline(model, x), rtol=1e-5, atol=1e-5)


def _overflowing_model():
    """A ReLU RNN whose input weights overflow float32 on huge but finite input."""
    model = make_model(cell_config("rnn", 3, 4, nonlinearity="relu"), 2)
    with torch.no_grad():
        model.rnn.weight_ih_l0.fill_(2.0)
    return model


def test_input_that_would_make_the_state_non_finite_is_refused_and_nothing_stored():
    model = _overflowing_model()
    engine = StreamEngine(model)
    good, bad = engine.open("good"), engine.open("bad")
    x = torch.randn(5, 3)
    engine.push(bad, x[:2])
    before = engine.snapshot(bad)
    huge = torch.full((2, 3), 3e38)
    with pytest.raises(ValueError, match="non-finite"):
        engine.push(bad, huge)
    out = engine.push_each({good: x[:2], bad: huge})
    assert isinstance(out[bad], ValueError) and "non-finite" in str(out[bad])
    after = engine.snapshot(bad)
    assert after.steps == 2
    torch.testing.assert_close(after.state, before.state, rtol=0, atol=0)
    rest = engine.push(good, x[2:])
    torch.testing.assert_close(torch.cat([out[good].y, rest]), _offline(model, x),
                               rtol=1e-5, atol=1e-5)
    for snapshot in engine.snapshots().values():
        assert all(bool(torch.isfinite(t).all()) for t in snapshot.state)


def test_a_sweep_racing_pushes_to_parked_streams_never_loses_them():
    model = forecaster()
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    engine = StreamEngine(model, idle_timeout=0.5, clock=clock)
    x = torch.randn(6, 3)
    engine.open("a")
    _Hooked(engine, after=engine.sweep)
    ys = [engine.push("a", x[t:t + 1]) for t in range(6)]  # parked again after every push
    torch.testing.assert_close(torch.cat(ys), _offline(model, x), rtol=1e-5, atol=1e-5)
    assert engine.parked() == ["a"] and engine.steps("a") == 6


def test_a_snapshot_of_many_streams_holds_the_engine_for_a_constant_number_of_tensor_ops():
    engine = StreamEngine(forecaster())
    for k in range(200):
        engine.open(f"s{k}")
    engine.evict("s0")
    held = [0]

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if engine._compute.locked():
                held[0] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        snapshots = engine.snapshots()
    assert len(snapshots) == 200
    assert held[0] <= 20  # not one copy per stream
