"""The server under races, faults, hostile input and an operator's mistakes (in process, no
sockets). Regression tests for issue 10, defects 1, 2, 4-10."""

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch

from lstmkit.checkpoint import save
from lstmkit.streaming import StreamEngine
from lstmkit.streaming.server import ServerConfig, _Batcher, create_app
from lstmkit.streaming.store import ForeignState, journals
from tests.streaming.test_engine_faults import _Hooked
from tests.tiny_models import charlm, forecaster

testclient = pytest.importorskip("starlette.testclient")
from starlette.websockets import WebSocketDisconnect  # noqa: E402

LOCAL = "http://127.0.0.1"


def _offline(model, x):
    with torch.no_grad():
        features = x[None] if model.embedding is None else model.embedding(x[None])
        return model.head(model.rnn(features)[0])[0].numpy()


def _client(engine, **options):
    return testclient.TestClient(create_app(engine, ServerConfig(**options)), base_url=LOCAL)


def test_a_close_racing_a_batch_fails_that_push_alone_and_steps_the_others_once():
    model = forecaster()
    engine = StreamEngine(model)
    ids = [engine.open(f"s{k}") for k in range(4)]
    xs = [torch.randn(2, 3) for _ in ids]
    closed = []
    _Hooked(engine, before=lambda: closed or not engine._pending or closed.append(
        engine.close("s2")))

    async def run():
        batcher = _Batcher(engine, lambda fn, *args: asyncio.to_thread(fn, *args))
        return await asyncio.gather(*(batcher.push(sid, x) for sid, x in zip(ids, xs)),
                                    return_exceptions=True)

    out = asyncio.run(run())
    assert closed and isinstance(out[2], KeyError)
    for k in (0, 1, 3):
        np.testing.assert_allclose(out[k].y, _offline(model, xs[k]), rtol=1e-5, atol=1e-6)
        assert engine.steps(ids[k]) == 2  # once, not pushed again one by one


def test_a_restart_with_parked_streams_resumes_every_stream(tmp_path):
    model = forecaster()
    state = str(tmp_path / "streams.safetensors")
    x = torch.randn(6, 3)
    first = StreamEngine(model, max_streams=2)
    with _client(first, state_path=state, max_streams=2) as client:
        heads = {}
        for sid in ("a", "b"):
            client.post("/streams", json={"id": sid})
            heads[sid] = client.post(f"/streams/{sid}", json={"x": x[:3].tolist()}).json()["y"]
        first.evict("a")
        client.post("/streams", json={"id": "c"})
    second = StreamEngine(model, max_streams=2)
    with _client(second, state_path=state, max_streams=2) as client:
        assert sorted(second.streams() + second.parked()) == ["a", "b", "c"]
        assert client.get("/streams/a").json() == {"id": "a", "steps": 3, "parked": True}
        client.delete("/streams/c")  # room for a: two may be open at once
        for sid in ("a", "b"):
            reply = client.post(f"/streams/{sid}", json={"x": x[3:].tolist()}).json()
            assert reply["steps"] == 6
            np.testing.assert_allclose(heads[sid] + reply["y"], _offline(model, x), rtol=1e-5,
                                       atol=1e-6)


def test_input_that_overflows_the_state_gets_400_and_is_never_stored(tmp_path):
    from tests.streaming.test_engine_faults import _overflowing_model

    model = _overflowing_model()
    state = tmp_path / "s.safetensors"
    engine = StreamEngine(model)
    x = torch.randn(4, 3)
    with _client(engine, state_path=str(state)) as client:
        client.post("/streams", json={"id": "a"})
        head = client.post("/streams/a", json={"x": x[:2].tolist()}).json()["y"]
        bad = client.post("/streams/a", json={"x": [[3e38] * 3] * 2})
        assert bad.status_code == 400 and "non-finite" in bad.json()["error"]
        with client.websocket_connect("ws://127.0.0.1/streams/a/ws") as ws:
            ws.send_text(json.dumps({"x": [[3e38] * 3]}))
            reply = json.loads(ws.receive_text())  # valid JSON: no NaN
            assert reply["status"] == 400
        tail = client.post("/streams/a", json={"x": x[2:].tolist()}).json()
        assert tail["steps"] == 4
        np.testing.assert_allclose(head + tail["y"], _offline(model, x), rtol=1e-5, atol=1e-6)
    with _client(StreamEngine(model), state_path=str(state)) as client:
        assert client.get("/streams/a").json()["steps"] == 4


def test_hostile_json_ids_and_frames_get_4xx_or_a_clean_close():
    engine = StreamEngine(forecaster())
    deep = "[" * 100_000 + "]" * 100_000
    with _client(engine) as client:
        for body in (deep, '{"x": ' + deep + "}", '{"id": "\\ud800"}'):
            reply = client.post("/streams", content=body,
                                headers={"content-type": "application/json"})
            assert 400 <= reply.status_code < 500, reply.text
        assert engine.streams() == []
        client.post("/streams", json={"id": "s"})
        reply = client.post("/streams/s", content='{"x": ' + deep + "}",
                            headers={"content-type": "application/json"})
        assert reply.status_code == 400
        with client.websocket_connect("ws://127.0.0.1/streams/s/ws") as ws:
            ws.send_text(deep)
            assert json.loads(ws.receive_text())["status"] == 400
            ws.send_bytes(b"\x00\xff binary")
            assert json.loads(ws.receive_text())["status"] == 400
            ws.send_text(json.dumps({"x": [[0.1, 0.2, 0.3]]}))
            assert json.loads(ws.receive_text())["steps"] == 1  # the connection was kept


def test_a_rate_below_one_still_lets_a_request_through():
    with _client(StreamEngine(forecaster()), rate=0.5) as client:
        statuses = [client.get("/health").status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses


def test_a_failed_periodic_save_is_logged_and_the_saves_go_on(tmp_path, monkeypatch, caplog):
    import time

    from lstmkit.streaming import server as server_module

    state = tmp_path / "s.safetensors"
    real, failures = server_module.save_table, []

    def flaky(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError("disk full")
        real(*args, **kwargs)

    with _client(StreamEngine(forecaster()), state_path=str(state),
                 snapshot_every=0.05) as client:
        monkeypatch.setattr(server_module, "save_table", flaky)
        client.post("/streams", json={"id": "s"})
        client.post("/streams/s", json={"x": [[0.1, 0.2, 0.3]] * 2})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (failures and state.stat().st_mtime_ns and
                                                   _saved_steps(state) == 2):
            time.sleep(0.05)
        assert failures and _saved_steps(state) == 2
    assert "periodic save" in caplog.text and "disk full" in caplog.text


def _saved_steps(state):
    from lstmkit.streaming import load_snapshots

    snap = load_snapshots(state)[0].get("s")
    return None if snap is None else snap.steps


def test_a_state_file_is_tied_to_its_model_and_a_corrupt_one_is_moved_aside(tmp_path):
    state = tmp_path / "s.safetensors"
    with _client(StreamEngine(forecaster()), state_path=str(state)) as client:
        client.post("/streams", json={"id": "s"})
    retrained = forecaster()
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)  # same shapes, other weights
    with pytest.raises(ForeignState, match="another model"):
        with _client(StreamEngine(retrained), state_path=str(state)):
            pass
    state.write_bytes(b"not a state file")
    engine = StreamEngine(forecaster())
    with _client(engine, state_path=str(state)) as client:
        assert client.get("/health").status_code == 200 and engine.streams() == []
    assert list(tmp_path.glob("s.safetensors.corrupt-*"))


def test_step_counts_are_readable_and_at_makes_a_resend_exact():
    engine = StreamEngine(forecaster())
    x = [[0.1, 0.2, 0.3]] * 3
    with _client(engine) as client:
        client.post("/streams", json={"id": "s"})
        assert client.get("/streams/s").json() == {"id": "s", "steps": 0, "parked": False}
        assert client.post("/streams/s", json={"x": x, "at": 0}).json()["steps"] == 3
        again = client.post("/streams/s", json={"x": x, "at": 0})  # a resend of the same chunk
        assert again.status_code == 409 and "step count 3" in again.json()["error"]
        assert client.get("/streams/s").json()["steps"] == 3
        assert client.get("/streams/nope").status_code == 404


@pytest.mark.parametrize("durability", ["journal", "fsync"])
def test_a_crash_in_journal_mode_loses_no_acknowledged_step(tmp_path, durability):
    model = forecaster()
    state, image = tmp_path / "s.safetensors", tmp_path / "crash"
    x = torch.randn(7, 3)
    with _client(StreamEngine(model), state_path=str(state), durability=durability) as client:
        client.post("/streams", json={"id": "a"})
        client.post("/streams", json={"id": "b"})
        ys = [client.post("/streams/a", json={"x": x[t:t + 2].tolist()}).json()["y"]
              for t in (0, 2)]
        client.post("/streams/b", json={"x": x.tolist()})
        client.post("/streams/b/reset")
        client.post("/streams", json={"id": "gone"})
        client.delete("/streams/gone")
        image.mkdir()  # what a kill -9 now would leave behind: the files as they are
        for path in [state, *journals(state)]:
            shutil.copy(path, image / path.name)
    engine = StreamEngine(model)
    with _client(engine, state_path=str(image / state.name), durability=durability) as client:
        assert sorted(engine.streams()) == ["a", "b"]
        assert client.get("/streams/a").json()["steps"] == 4
        assert client.get("/streams/b").json()["steps"] == 0
        tail = client.post("/streams/a", json={"x": x[4:].tolist(), "at": 4}).json()["y"]
    np.testing.assert_allclose(ys[0] + ys[1] + tail, _offline(model, x), rtol=1e-5, atol=1e-6)


def test_unsafe_configurations_are_refused():
    with pytest.raises(ValueError, match="loopback address without a token"):
        ServerConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="empty"):
        ServerConfig(token="")
    ServerConfig(host="0.0.0.0", token="t")
    ServerConfig(host="0.0.0.0", insecure=True)
    ServerConfig(host="::1")
    with pytest.raises(ValueError, match="threads: expected at least 1, got 0"):
        ServerConfig(threads=0)


def test_without_a_token_host_origin_and_content_type_are_checked():
    engine = StreamEngine(forecaster())
    with _client(engine) as client:
        assert client.get("/health", headers={"host": "evil.example"}).status_code == 403
        cross = client.post("/streams", content='{"id": "x"}',
                            headers={"origin": "http://evil.example",
                                     "content-type": "application/json"})
        assert cross.status_code == 403
        plain = client.post("/streams", content='{"id": "x"}',
                            headers={"content-type": "text/plain"})
        assert plain.status_code == 415
        assert engine.streams() == []
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("ws://127.0.0.1/streams/w/ws",
                                          headers={"origin": "http://evil.example"}) as ws:
                ws.receive_text()
        assert engine.streams() == []
        local = client.post("/streams", json={"id": "ok"},
                            headers={"origin": "http://localhost:3000"})
        assert local.status_code == 201


def test_over_long_chunks_and_messages_get_413_on_http_and_websocket():
    engine = StreamEngine(forecaster(), max_chunk=4)
    with _client(engine, max_request_bytes=400) as client:
        client.post("/streams", json={"id": "s"})
        assert client.post("/streams/s", json={"x": [[0.0] * 3] * 5}).status_code == 413
        with client.websocket_connect("ws://127.0.0.1/streams/s/ws") as ws:
            ws.send_text(json.dumps({"x": [[0.0] * 3] * 5}))
            assert json.loads(ws.receive_text())["status"] == 413
            ws.send_text(json.dumps({"x": [[0.0] * 3] * 40}))  # over 400 bytes
            assert json.loads(ws.receive_text())["status"] == 413


def test_a_charlm_is_served_text_in_characters_out_and_a_forecaster_is_refused(tmp_path):
    from lstmkit.cli import main
    from lstmkit.streaming.adapters import for_model
    from lstmkit.tasks.text import Vocabulary

    model = charlm()
    vocab = Vocabulary("abcdefghij")
    model.meta = {"app": "charlm", "vocab": vocab.chars}
    engine = StreamEngine(model)
    text = "abcabd"
    with testclient.TestClient(create_app(engine, ServerConfig(), for_model(model)),
                               base_url=LOCAL) as client:
        client.post("/streams", json={"id": "t"})
        replies = [client.post("/streams/t", json={"x": part}).json()
                   for part in (text[:4], text[4:])]
    logits = torch.from_numpy(_offline(model, vocab.encode(text)))
    probs = replies[0]["probs"] + replies[1]["probs"]
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), -1), rtol=1e-5, atol=1e-6)
    assert replies[0]["next"] + replies[1]["next"] == vocab.decode(logits.argmax(-1))
    served = forecaster()
    served.meta = {"app": "forecast"}
    with pytest.raises(ValueError, match="window of the last"):
        for_model(served)
    save(tmp_path / "f.safetensors", served, app="forecast")
    assert main(["serve", str(tmp_path / "f.safetensors")]) == 2


def test_the_cli_refuses_an_empty_token_and_an_exposed_host_without_one(tmp_path, monkeypatch,
                                                                        capsys):
    from lstmkit.cli import main

    checkpoint = tmp_path / "m.safetensors"
    save(checkpoint, forecaster())
    monkeypatch.setenv("LSTMKIT_TOKEN", "")
    assert main(["serve", str(checkpoint)]) == 2
    assert "empty" in capsys.readouterr().err
    monkeypatch.delenv("LSTMKIT_TOKEN")
    assert main(["serve", str(checkpoint), "--host", "0.0.0.0"]) == 2
    assert "loopback address without a token" in capsys.readouterr().err
