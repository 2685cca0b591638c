"""The engine's scheduler across the cases a sequence batcher must get right (as Triton
Inference Server's sequence-batcher tests do): length-1 sequences, a full backlog, a sequence
timeout, ragged batches, the same id twice, and a forced scheduler delay so that requests
queue. Every case checks each stream's outputs against the model run on it alone."""

import threading

import pytest
import torch

from lstmkit.streaming import EngineFull, StreamEngine
from tests.streaming.test_engine import hold_first_round
from tests.tiny_models import forecaster

MODEL = forecaster(torch.float64)


def _offline(x):
    with torch.no_grad():
        return MODEL.head(MODEL.rnn(x[None])[0])[0]


def _inputs(n, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(steps, 3, generator=gen, dtype=torch.float64) for _ in range(n)]


def _exact(ys, x):
    torch.testing.assert_close(torch.cat(ys), _offline(x), rtol=0, atol=1e-12)


def length_one_sequences():
    engine = StreamEngine(MODEL)
    xs = _inputs(5, 6)
    ids = [engine.open() for _ in xs]
    outs = {sid: [] for sid in ids}
    for t in range(6):
        for sid, y in engine.push_many({sid: x[t:t + 1] for sid, x in zip(ids, xs)}).items():
            outs[sid].append(y)
    for sid, x in zip(ids, xs):
        _exact(outs[sid], x)


def full_backlog():
    engine = StreamEngine(MODEL, max_streams=3)
    xs = _inputs(3, 4)
    ids = [engine.open() for _ in xs]
    heads = engine.push_many({sid: x[:2] for sid, x in zip(ids, xs)})
    with pytest.raises(EngineFull):
        engine.open("late")
    engine.close(ids[0])
    engine.open("late")
    tails = engine.push_many({sid: x[2:] for sid, x in zip(ids[1:], xs[1:])})
    for sid, x in zip(ids[1:], xs[1:]):
        _exact([heads[sid], tails[sid]], x)


def sequence_timeout():
    now = [0.0]
    engine = StreamEngine(MODEL, idle_timeout=5.0, clock=lambda: now[0])
    (x,) = _inputs(1, 6)
    sid = engine.open()
    head = engine.push(sid, x[:3])
    now[0] = 10.0
    assert engine.sweep() == [sid] and engine.parked() == [sid]
    _exact([head, engine.push(sid, x[3:])], x)


def ragged_batches():
    engine = StreamEngine(MODEL)
    xs = _inputs(3, 9)
    ids = [engine.open() for _ in xs]
    plans = [(1, 3, 5), (5, 1, 3), (3, 5, 1)]
    outs, done = {sid: [] for sid in ids}, [0, 0, 0]
    for r in range(3):
        chunks = {}
        for k, sid in enumerate(ids):
            chunks[sid] = xs[k][done[k]:done[k] + plans[k][r]]
            done[k] += plans[k][r]
        for sid, y in engine.push_many(chunks).items():
            outs[sid].append(y)
    for sid, k in zip(ids, range(3)):
        _exact(outs[sid], xs[k][:done[k]])


def same_id_twice():
    engine = StreamEngine(MODEL)
    (x,) = _inputs(1, 4)
    sid = engine.open()
    gate, entered = hold_first_round(engine)
    outs = {}
    first = threading.Thread(target=lambda: outs.setdefault(0, engine.push(sid, x[:1])))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=lambda: outs.setdefault(1, engine.push(sid, x[1:])))
    second.start()
    while len(engine._pending) < 1:
        threading.Event().wait(0.001)
    gate.set()
    first.join(10)
    second.join(10)
    _exact([outs[0], outs[1]], x)
    assert list(engine.stats._batches) == [1, 1]  # one chunk of a stream per round


def forced_delay():
    engine = StreamEngine(MODEL)
    xs = _inputs(5, 3)
    ids = [engine.open() for _ in xs]
    gate, entered = hold_first_round(engine)
    outs = {}
    threads = [threading.Thread(target=lambda k=k: outs.setdefault(k, engine.push(ids[k], xs[k])))
               for k in range(5)]
    threads[0].start()
    assert entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    while len(engine._pending) < 4:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(10)
    for k, x in enumerate(xs):
        _exact([outs[k]], x)
    assert list(engine.stats._batches) == [1, 4]  # the queued requests went in one round


CASES = {f.__name__: f for f in (length_one_sequences, full_backlog, sequence_timeout,
                                 ragged_batches, same_id_twice, forced_delay)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_case(case):
    CASES[case]()


def test_a_well_formed_batch_and_a_malformed_one():
    engine = StreamEngine(MODEL)
    xs = _inputs(3, 4)
    ids = [engine.open() for _ in xs]
    with pytest.raises(ValueError, match=r"expected shape \(T, 3\)"):
        engine.push_many({ids[0]: xs[0], ids[1]: torch.zeros(4, 2, dtype=torch.float64)})
    assert {engine.steps(sid) for sid in ids} == {0}  # nothing stepped
    out = engine.push_many(dict(zip(ids, xs)))  # the stacked fast path
    for sid, x in zip(ids, xs):
        _exact([out[sid]], x)
