import random
import threading

import pytest
import torch

from lstmkit import cell_config
from lstmkit.streaming import EngineFull, StreamEngine, StreamSnapshot, UnknownStream
from tests.tiny_models import charlm, forecaster, make_model, variant


def _offline(model, x):
    """The model run on one whole stream at once, an output per step: (T, O)."""
    with torch.no_grad():
        features = x[None] if model.embedding is None else model.embedding(x[None])
        y, _ = model.rnn(features)
        return model.head(y)[0]


def _chunks(total: int, rng: random.Random) -> list[tuple[int, int]]:
    bounds, t = [], 0
    while t < total:
        n = min(total - t, rng.randint(1, 5))
        bounds.append((t, t + n))
        t += n
    return bounds


MODELS = {
    "forecaster": forecaster,
    "charlm": charlm,
    "variant": variant,
    "gru": lambda: make_model(cell_config("gru", 3, 10, reset_after=False), 2, num_layers=2),
    "rnn": lambda: make_model(cell_config("rnn", 3, 10, nonlinearity="relu"), 2),
}


def _stream_input(model, steps, gen):
    if model.config.vocab_size:
        return torch.randint(0, model.config.vocab_size, (steps,), generator=gen)
    return torch.randn(steps, model.config.layer.cell.input_size, generator=gen,
                       dtype=next(model.parameters()).dtype)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_interleaved_streams_equal_each_stream_alone(name):
    model = MODELS[name]()
    engine = StreamEngine(model)
    gen, rng = torch.Generator().manual_seed(1), random.Random(1)
    inputs = {engine.open(): _stream_input(model, 17, gen) for _ in range(4)}
    plans = {sid: _chunks(17, rng) for sid in inputs}
    outputs = {sid: [] for sid in inputs}
    while any(plans.values()):
        sid = rng.choice([s for s in plans if plans[s]])
        start, stop = plans[sid].pop(0)
        outputs[sid].append(engine.push(sid, inputs[sid][start:stop]))
    for sid, x in inputs.items():
        torch.testing.assert_close(torch.cat(outputs[sid]), _offline(model, x),
                                   rtol=1e-5, atol=1e-5)


def test_batched_rounds_equal_alone_in_float64():
    model = forecaster(torch.float64)
    engine = StreamEngine(model)
    gen = torch.Generator().manual_seed(2)
    xs = [_stream_input(model, 9, gen) for _ in range(6)]
    ids = [engine.open() for _ in xs]
    outs = _concurrent_pushes(engine, ids, xs, chunk=3)
    for sid, x in zip(ids, xs):
        torch.testing.assert_close(torch.cat(outs[sid]), _offline(model, x), rtol=0, atol=1e-12)


def _concurrent_pushes(engine, ids, xs, chunk):
    outs = {sid: [] for sid in ids}
    errors = []

    def client(sid, x):
        try:
            for t in range(0, len(x), chunk):
                outs[sid].append(engine.push(sid, x[t:t + chunk]))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=client, args=pair) for pair in zip(ids, xs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    return outs


def test_many_threads_keep_every_stream_exact():
    model = charlm()
    engine = StreamEngine(model, max_batch=8)
    gen = torch.Generator().manual_seed(3)
    xs = [_stream_input(model, 12, gen) for _ in range(24)]
    ids = [engine.open(f"s{k}") for k in range(len(xs))]
    outs = _concurrent_pushes(engine, ids, xs, chunk=4)
    for sid, x in zip(ids, xs):
        torch.testing.assert_close(torch.cat(outs[sid]), _offline(model, x), rtol=1e-5,
                                   atol=1e-5)
    assert engine.stats.stream_steps == 24 * 12
    assert engine.stats.summary()["batch_size"]["max"] <= 8


def hold_first_round(engine):
    """Hold the engine's first round until the returned gate is set; ``entered`` is set once
    that round has its batch."""
    gate, entered = threading.Event(), threading.Event()
    run = engine._run

    def held(batch):
        if not entered.is_set():
            entered.set()
            assert gate.wait(10)
        run(batch)

    engine._run = held
    return gate, entered


def test_pushes_that_arrive_during_a_round_are_batched_together():
    model = forecaster()
    engine = StreamEngine(model)
    ids = [engine.open() for _ in range(4)]
    gate, entered = hold_first_round(engine)
    threads = [threading.Thread(target=engine.push, args=(ids[0], torch.zeros(1, 3)))]
    threads[0].start()
    assert entered.wait(10)
    for sid in ids[1:]:
        threads.append(threading.Thread(target=engine.push, args=(sid, torch.zeros(2, 3))))
        threads[-1].start()
    while len(engine._pending) < 3:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert list(engine.stats._batches) == [1, 3]


def test_same_stream_chunks_from_two_threads_apply_in_order_one_per_round():
    model = forecaster()
    engine = StreamEngine(model)
    sid = engine.open()
    x = torch.randn(40, 3)
    outs = _concurrent_pushes(engine, [sid], [x], chunk=1)
    torch.testing.assert_close(torch.cat(outs[sid]), _offline(model, x), rtol=1e-5, atol=1e-5)
    assert engine.snapshot(sid).steps == 40


def test_reset_close_and_unknown_streams():
    model = forecaster()
    engine = StreamEngine(model)
    a, b = engine.open("a"), engine.open("b")
    x = torch.randn(6, 3)
    engine.push(a, x[:3])
    first_b = engine.push(b, x)
    engine.reset(a)
    torch.testing.assert_close(engine.push(a, x), _offline(model, x))
    engine.close(a)
    with pytest.raises(UnknownStream, match="'a': expected an open stream"):
        engine.push(a, x)
    with pytest.raises(UnknownStream):
        engine.reset("nope")
    with pytest.raises(ValueError, match="already open"):
        engine.open("b")
    torch.testing.assert_close(first_b, _offline(model, x))  # b was untouched throughout
    torch.testing.assert_close(torch.cat([first_b, engine.push(b, x)]),
                               _offline(model, torch.cat([x, x])), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, error, match", [
    (torch.randn(2, 4), ValueError, r"expected shape \(T, 3\) or \(3,\), got \(2, 4\)"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), ValueError, "expected finite values"),
    (torch.tensor([[0.0, float("inf"), 1.0]]), ValueError, "expected finite values"),
    (torch.zeros(0, 3), ValueError, "expected 1 to 64 steps, got 0"),
    (torch.zeros(65, 3), ValueError, "expected 1 to 64 steps, got 65"),
    ("abc", TypeError, "expected numbers"),
    ([[1, 2], [3]], TypeError, "expected numbers"),
])
def test_bad_chunks_fail_alone(bad, error, match):
    model = forecaster()
    engine = StreamEngine(model, max_chunk=64)
    good, other = engine.open(), engine.open()
    x = torch.randn(5, 3)
    engine.push(good, x[:2])
    with pytest.raises(error, match=match):
        engine.push(other, bad)
    out = engine.push(good, x[2:])
    torch.testing.assert_close(out, _offline(model, x)[2:], rtol=1e-5, atol=1e-5)
    assert engine.snapshot(other).steps == 0


def test_token_model_checks_ids():
    engine = StreamEngine(charlm())
    sid = engine.open()
    with pytest.raises(ValueError, match=r"token ids in \[0, 11\), got values in \[0, 11\]"):
        engine.push(sid, [0, 11])
    with pytest.raises(TypeError, match="expected integer token ids"):
        engine.push(sid, [0.5])
    assert tuple(engine.push(sid, 3).shape) == (1, 11)


def test_models_that_need_the_whole_sequence_are_refused():
    with pytest.raises(ValueError, match="unidirectional"):
        StreamEngine(make_model(cell_config("lstm", 3, 4), 2, bidirectional=True))
    with pytest.raises(ValueError, match="pooling 'none' or 'last'"):
        StreamEngine(make_model(cell_config("lstm", 3, 4), 2, pooling="mean"))
    with pytest.raises(TypeError, match="SequenceModel"):
        StreamEngine(torch.nn.LSTM(3, 4))


def test_too_many_streams_then_idle_eviction_parks_and_restores_exactly():
    now = [0.0]
    model = forecaster()
    engine = StreamEngine(model, max_streams=2, idle_timeout=10.0, clock=lambda: now[0])
    a, b = engine.open("a"), engine.open("b")
    x = torch.randn(8, 3)
    first = engine.push(a, x[:4])
    with pytest.raises(EngineFull, match="at most 2 open"):
        engine.open("c")
    now[0] = 5.0
    engine.push(b, x[:1])
    now[0] = 12.0  # a idle 12 s, b 7 s
    assert engine.open("c") == "c"
    assert engine.parked() == ["a"] and sorted(engine.streams()) == ["b", "c"]
    engine.close("c")
    rest = engine.push(a, x[4:])  # restored from its parked snapshot
    torch.testing.assert_close(torch.cat([first, rest]), _offline(model, x), rtol=1e-5, atol=1e-5)
    now[0] = 40.0
    assert sorted(engine.sweep()) == ["a", "b"]
    assert engine.streams() == []


def test_snapshots_restore_into_another_engine():
    model = variant()
    x = torch.randn(10, 4)
    one = StreamEngine(model)
    sid = one.open()
    head = one.push(sid, x[:6])
    snapshot = one.evict(sid)
    assert snapshot.steps == 6
    two = StreamEngine(model)
    two.open(sid, snapshot)
    tail = two.push(sid, x[6:])
    torch.testing.assert_close(torch.cat([head, tail]), _offline(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected state shapes"):
        two.open("bad", StreamSnapshot((torch.zeros(2, 5),) * 2, 0))


def test_parked_streams_are_bounded():
    engine = StreamEngine(forecaster(), max_parked=2)
    ids = [engine.open() for _ in range(3)]
    for sid in ids:
        engine.evict(sid)
    assert engine.parked() == ids[1:]
    with pytest.raises(UnknownStream):
        engine.push(ids[0], torch.zeros(1, 3))


def test_stats_summary_counts_rounds_and_latencies():
    engine = StreamEngine(forecaster())
    sid = engine.open()
    for _ in range(3):
        engine.push(sid, torch.zeros(2, 3))
    summary = engine.stats.summary()
    assert summary["rounds"] == 3 and summary["stream_steps"] == 6
    assert summary["batch_size"] == {"mean": 1.0, "max": 1}
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]


def test_push_many_steps_streams_together_and_checks_every_chunk_first():
    model = charlm()
    engine = StreamEngine(model)
    gen = torch.Generator().manual_seed(4)
    xs = {engine.open(): _stream_input(model, 6, gen) for _ in range(5)}
    first = engine.push_many({sid: x[:2] for sid, x in xs.items()})
    assert engine.stats.summary()["batch_size"]["max"] == 5
    bad = {sid: x[2:] for sid, x in xs.items()}
    bad[next(iter(xs))] = [99]
    with pytest.raises(ValueError, match="token ids"):
        engine.push_many(bad)
    assert {engine.steps(sid) for sid in xs} == {2}  # nothing stepped
    rest = engine.push_many({sid: x[2:] for sid, x in xs.items()})
    for sid, x in xs.items():
        torch.testing.assert_close(torch.cat([first[sid], rest[sid]]), _offline(model, x),
                                   rtol=1e-5, atol=1e-5)
