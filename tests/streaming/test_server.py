"""The server in process (Starlette's test client: no sockets) for every route and error."""

import json
import time

import numpy as np
import pytest
import torch

from lstmkit.streaming import StreamEngine, load_snapshots
from lstmkit.streaming.server import ServerConfig, create_app
from tests.tiny_models import charlm, forecaster

testclient = pytest.importorskip("starlette.testclient")


def _offline(model, x):
    with torch.no_grad():
        features = x[None] if model.embedding is None else model.embedding(x[None])
        return model.head(model.rnn(features)[0])[0].numpy()


def _client(model=None, **options):
    model = model or forecaster()
    engine = StreamEngine(model, max_streams=options.pop("max_streams", 8),
                          max_chunk=options.pop("max_chunk", 64))
    return _test_client(create_app(engine, ServerConfig(**options))), model, engine


def _test_client(app):
    """A client whose requests name a loopback Host, as a local client's do."""
    return testclient.TestClient(app, base_url="http://127.0.0.1")


def test_http_stream_outputs_equal_the_offline_model():
    client, model, _ = _client()
    x = torch.randn(9, 3)
    with client:
        sid = client.post("/streams", json={"id": "s1"}).json()["id"]
        assert sid == "s1"
        ys = []
        for start, stop in ((0, 4), (4, 5), (5, 9)):
            reply = client.post(f"/streams/{sid}", json={"x": x[start:stop].tolist()})
            assert reply.status_code == 200, reply.text
            ys += reply.json()["y"]
        np.testing.assert_allclose(ys, _offline(model, x), rtol=1e-5, atol=1e-6)
        assert client.post(f"/streams/{sid}/reset").status_code == 200
        again = client.post(f"/streams/{sid}", json={"x": x.tolist()}).json()
        np.testing.assert_allclose(again["y"], _offline(model, x), rtol=1e-5, atol=1e-6)
        assert again["steps"] == 9
        assert client.delete(f"/streams/{sid}").status_code == 200
        assert client.post(f"/streams/{sid}", json={"x": [[0, 0, 0]]}).status_code == 404


def test_websocket_stream_equals_the_offline_model_for_a_token_model():
    client, model, engine = _client(charlm())
    x = torch.randint(0, 11, (10,))
    with client, client.websocket_connect("ws://127.0.0.1/streams/chars/ws") as ws:
        ys = []
        for start in range(0, 10, 3):
            ws.send_text(json.dumps({"x": x[start:start + 3].tolist()}))
            ys += json.loads(ws.receive_text())["y"]
        np.testing.assert_allclose(ys, _offline(model, x), rtol=1e-5, atol=1e-6)
        ws.send_text(json.dumps({"x": [99]}))
        assert "token ids in [0, 11)" in json.loads(ws.receive_text())["error"]
        ws.send_text("not json")
        assert json.loads(ws.receive_text())["status"] == 400
        ws.send_text(json.dumps({"close": True}))
        assert json.loads(ws.receive_text()) == {"closed": "chars"}
    assert engine.streams() == []


@pytest.mark.parametrize("body, status, message", [
    ({"x": [[1.0, 2.0]]}, 400, "expected shape (T, 3)"),
    ({"x": [[1.0, "nan", 2.0]]}, 400, "expected numbers"),
    ({"x": [[1.0, float("nan"), 2.0]]}, 400, "expected finite values"),
    ({"x": [[1.0, float("inf"), 2.0]]}, 400, "expected finite values"),
    ({"y": 1}, 400, "expected {\"x\": chunk}"),
    ({"x": [[0.0, 0.0, 0.0]] * 65}, 413, "expected 1 to 64 steps"),
])
def test_bad_pushes_fail_alone(body, status, message):
    client, model, _ = _client()
    x = torch.randn(4, 3)
    with client:
        client.post("/streams", json={"id": "good"})
        client.post("/streams", json={"id": "bad"})
        first = client.post("/streams/good", json={"x": x[:2].tolist()}).json()["y"]
        # json.dumps writes NaN/Infinity, which Python's json reads back: the engine must catch them
        reply = client.post("/streams/bad", content=json.dumps(body),
                            headers={"content-type": "application/json"})
        assert reply.status_code == status and message in reply.json()["error"]
        rest = client.post("/streams/good", json={"x": x[2:].tolist()}).json()["y"]
        np.testing.assert_allclose(first + rest, _offline(model, x), rtol=1e-5, atol=1e-6)
        assert client.get("/metrics").json()["streams"] == 2


def test_token_size_rate_and_stream_limits():
    client, _, _ = _client(token="s3cret", max_request_bytes=2000, max_streams=2)
    auth = {"authorization": "Bearer s3cret"}
    with client:
        assert client.get("/health").status_code == 200  # open to probes
        assert client.get("/metrics").status_code == 401
        assert client.post("/streams", headers={"authorization": "Bearer nope"}).status_code == 401
        assert client.post("/streams", json={"id": "a"}, headers=auth).status_code == 201
        big = {"x": [[0.5, 0.5, 0.5]] * 200}
        assert client.post("/streams/a", json=big, headers=auth).status_code == 413
        assert client.post("/streams", json={"id": "b"}, headers=auth).status_code == 201
        full = client.post("/streams", json={"id": "c"}, headers=auth)
        assert full.status_code == 429 and "at most 2 open" in full.json()["error"]
    client, _, _ = _client(rate=2.0)
    with client:  # a burst of 2, then 2 per second: ten quick requests must hit the limit
        statuses = [client.get("/metrics").status_code for _ in range(10)]
        assert statuses[:2] == [200, 200] and 429 in statuses
    with pytest.raises(ValueError, match="rate: expected None or > 0"):
        ServerConfig(rate=0.0)


def test_websocket_refuses_a_bad_token():
    client, _, engine = _client(token="s3cret")
    from starlette.websockets import WebSocketDisconnect

    with client, pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("ws://127.0.0.1/streams/x/ws") as ws:
            ws.receive_text()
    assert engine.streams() == []


def test_shutdown_saves_and_start_resumes_the_streams(tmp_path):
    model = forecaster()
    state = tmp_path / "streams.safetensors"
    x = torch.randn(8, 3)
    first = StreamEngine(model)
    with _test_client(create_app(first, ServerConfig(state_path=str(state)))) as client:
        client.post("/streams", json={"id": "live"})
        head = client.post("/streams/live", json={"x": x[:5].tolist()}).json()["y"]
    snapshots, _ = load_snapshots(state)
    assert list(snapshots) == ["live"] and snapshots["live"].steps == 5
    second = StreamEngine(model)
    with _test_client(create_app(second, ServerConfig(state_path=str(state)))) as client:
        tail = client.post("/streams/live", json={"x": x[5:].tolist()}).json()["y"]
    np.testing.assert_allclose(head + tail, _offline(model, x), rtol=1e-5, atol=1e-6)


def test_pushes_arriving_together_are_stepped_in_one_round_and_fail_alone():
    import asyncio

    from lstmkit.streaming.server import _Batcher

    model = forecaster()
    engine = StreamEngine(model)
    ids = [engine.open() for _ in range(5)]
    xs = [torch.randn(2, 3) for _ in ids]

    async def run(chunks):
        batcher = _Batcher(engine, lambda fn, *args: asyncio.to_thread(fn, *args))
        return await asyncio.gather(*(batcher.push(sid, x) for sid, x in chunks),
                                    return_exceptions=True)

    first = asyncio.run(run(zip(ids, xs)))
    assert engine.stats.rounds == 1 and engine.stats.summary()["batch_size"]["max"] == 5
    engine.close(ids[1])
    mixed = [(ids[0], xs[0]), (ids[1], xs[1]), (ids[2], [[float("nan")] * 3]), (ids[3], xs[3])]
    second = asyncio.run(run(mixed))
    assert isinstance(second[1], KeyError) and isinstance(second[2], ValueError)
    for k in (0, 3):
        torch.testing.assert_close(torch.cat([first[k].y, second[k].y]),
                                   torch.from_numpy(_offline(model, torch.cat([xs[k]] * 2))),
                                   rtol=1e-5, atol=1e-5)


def test_periodic_snapshots_while_running(tmp_path):
    state = tmp_path / "streams.safetensors"
    engine = StreamEngine(forecaster())
    config = ServerConfig(state_path=str(state), snapshot_every=0.05)
    with _test_client(create_app(engine, config)) as client:
        client.post("/streams", json={"id": "s"})
        client.post("/streams/s", json={"x": [[0.1, 0.2, 0.3]] * 3})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if state.exists() and load_snapshots(state)[0].get("s", (None, 0))[1] == 3:
                break
            time.sleep(0.05)
        assert load_snapshots(state)[0]["s"].steps == 3  # saved while the server still runs
