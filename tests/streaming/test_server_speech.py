"""A speech checkpoint served: audio chunks in, partial and final transcripts out, the final one
equal to the offline decode; bad audio refused alone. In process (Starlette's test client), and
once over 127.0.0.1 with the real ``lstmkit serve``."""

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from lstmkit.apps.transcriber import chunks, transcribe_offline
from lstmkit.checkpoint import save
from lstmkit.streaming import StreamEngine
from lstmkit.streaming.adapters import for_model
from lstmkit.streaming.server import ServerConfig, create_app
from tests.streaming.speech_model import audio, speech_model

testclient = pytest.importorskip("starlette.testclient")
LOCAL = "http://127.0.0.1"


def _client(model, engine=None):
    engine = engine or StreamEngine(model, max_streams=8)
    app = create_app(engine, ServerConfig(), for_model(model))
    return testclient.TestClient(app, base_url=LOCAL), engine


def _int16(samples):
    return np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")


def test_http_chunks_give_partials_and_the_offline_transcript():
    model = speech_model("greedy")
    samples = audio(seed=0)
    offline = transcribe_offline(model, samples)
    client, engine = _client(model)
    sizes = [5, 300, 1000, 37, 2500]  # samples: some chunks complete no model step
    with client:
        assert client.post("/streams", json={"id": "a"}).status_code == 201
        start, new, replies = 0, "", []
        while start < len(samples):
            size = sizes[len(replies) % len(sizes)]
            chunk = samples[start:start + size]
            reply = client.post("/streams/a", json={"x": chunk.tolist(), "at": start,
                                                    "sample_rate": 16_000})
            assert reply.status_code == 200, reply.text
            replies.append(reply.json())
            start += len(chunk)
            new += replies[-1]["new"]
            assert replies[-1]["samples"] == start
            assert replies[-1]["partial"] == new.strip()
        assert replies[-1]["steps"] == engine.steps("a") > 0
        closed = client.delete("/streams/a")
        assert closed.status_code == 200, closed.text
    assert closed.json() == {"id": "a", "text": offline, "samples": len(samples)}
    assert new and offline.startswith(new.strip())  # a partial that can fail: it is not empty
    assert engine.streams() == []


def test_websocket_int16_base64_equals_the_offline_beam_decode():
    model = speech_model("beam")
    pcm = _int16(audio(seed=1))
    offline = transcribe_offline(model, pcm / 32768.0)
    assert offline
    client, _ = _client(model)
    with client, client.websocket_connect("ws://127.0.0.1/streams/b/ws") as ws:
        for chunk in chunks(pcm, 40):
            ws.send_text(json.dumps({"x": base64.b64encode(chunk.tobytes()).decode(),
                                     "encoding": "int16"}))
            assert "new" in json.loads(ws.receive_text())
        ws.send_text(json.dumps({"close": True}))
        assert json.loads(ws.receive_text()) == {"closed": "b", "text": offline,
                                                 "samples": len(pcm)}


BAD = [
    ({"x": [0.1] * 400, "sample_rate": 8000}, "sample_rate: expected 16000"),
    ({"x": [0.1] * 400, "sample_rate": "16k"}, "sample_rate: expected 16000"),
    ('{"x": [0.1, NaN, 0.2]}', "expected finite samples"),
    ('{"x": [0.1, -Infinity]}', "expected finite samples"),
    ({"x": base64.b64encode(np.array([0.1, np.nan], "<f4").tobytes()).decode()},
     "expected finite samples"),
    ({"x": []}, "expected at least one sample, got none"),
    ({"x": ""}, "expected at least one sample, got none"),
    ({"x": [1200.0, -80.0]}, "send them with \"encoding\": \"int16\""),
    ({"x": [1.5, 40000], "encoding": "int16"}, "expected int16 samples"),
    ({"x": "AAAA", "encoding": "int16"}, "expected a whole number of 2-byte int16 samples"),
    ({"x": "not base64!"}, "invalid base64"),
    ({"x": [0.1], "encoding": "mp3"}, "encoding: expected one of"),
    ({"x": [[0.1, 0.2]]}, "one channel"),
    ({"x": {"a": 1}}, "a list of samples or a base64 string"),
    ({"x": ["a"]}, "a list of numbers"),
]


def test_bad_audio_gets_400_and_touches_no_stream():
    model = speech_model("greedy")
    samples = audio(seed=2)
    client, engine = _client(model)
    half = len(samples) // 2
    with client:
        for sid in ("victim", "other"):
            client.post("/streams", json={"id": sid})
            assert client.post(f"/streams/{sid}", json={"x": samples[:half].tolist()}
                               ).status_code == 200
        before = engine.steps("victim"), engine.steps("other")
        for body, message in BAD:  # each bad chunk, to each stream mid-utterance
            kwargs = {"content": body, "headers": {"content-type": "application/json"}} \
                if isinstance(body, str) else {"json": body}
            for sid in ("victim", "other"):
                reply = client.post(f"/streams/{sid}", **kwargs)
                assert reply.status_code == 400, (body, reply.text)
                assert message in reply.json()["error"], (body, reply.text)
        assert (engine.steps("victim"), engine.steps("other")) == before
        for sid in ("victim", "other"):
            assert client.post(f"/streams/{sid}", json={"x": samples[half:].tolist()}
                               ).status_code == 200
            assert client.delete(f"/streams/{sid}").json()["text"] == \
                transcribe_offline(model, samples)


def test_a_wrong_at_a_lost_front_end_and_the_offline_model_are_refused():
    model = speech_model("greedy")
    samples = audio(seed=0)
    engine = StreamEngine(model)
    client, _ = _client(model, engine)
    with client:
        client.post("/streams", json={"id": "s"})
        client.post("/streams/s", json={"x": samples[:4000].tolist()})
        reply = client.post("/streams/s", json={"x": samples[4000:].tolist(), "at": 3999})
        assert reply.status_code == 409
        assert "sample count 4000, got 3999" in reply.json()["error"]
        # A stream the engine has at step > 0 but this server never heard (a restart).
        engine.open("resumed")
        engine.push("resumed", np.zeros((2, 120), np.float32))
        reply = client.post("/streams/resumed", json={"x": samples[:4000].tolist()})
        assert reply.status_code == 409 and "reset it" in reply.json()["error"]
        assert client.post("/streams/resumed/reset").status_code == 200
        assert client.post("/streams/resumed", json={"x": samples.tolist()}).status_code == 200
        assert client.delete("/streams/resumed").json()["text"] == \
            transcribe_offline(model, samples)
        assert client.post("/streams/gone", json={"x": [0.0]}).status_code == 404
        client.post("/streams", json={"id": "short"})
        client.post("/streams/short", json={"x": [0.0] * 100})
        assert client.delete("/streams/short").json() == {"id": "short", "text": "",
                                                           "samples": 100}
    model.meta = {**model.meta, "kind": "offline"}
    with pytest.raises(ValueError, match="use the run's stream/ checkpoint"):
        for_model(model)


def test_the_real_server_over_loopback(tmp_path):
    websockets = pytest.importorskip("websockets.asyncio.client")
    from tests.streaming.test_server_loopback import TOKEN, _free_port, _start, _stop

    model = speech_model("beam")
    (tmp_path / "run" / "stream").mkdir(parents=True)  # served as a transcribe run folder
    save(tmp_path / "run" / "stream" / "model.safetensors", model, **model.meta)
    voices = [audio(seed=k) for k in range(3)]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def speak(port, k):
        async with websockets.connect(f"ws://127.0.0.1:{port}/streams/v{k}/ws",
                                      additional_headers=headers, open_timeout=20) as ws:
            for chunk in chunks(voices[k], 100):
                await ws.send(json.dumps({"x": chunk.tolist()}))
                assert "new" in json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(json.dumps({"x": [0.1, float("nan")]}))  # one bad chunk mid-stream
            bad = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert bad["status"] == 400 and "finite" in bad["error"]
            await ws.send(json.dumps({"close": True}))
            return json.loads(await asyncio.wait_for(ws.recv(), 30))["text"]

    async def everyone(port):
        return await asyncio.gather(*(speak(port, k) for k in range(len(voices))))

    port = _free_port()
    server = _start(tmp_path / "run", port, tmp_path / "streams.safetensors")
    try:
        finals = asyncio.run(asyncio.wait_for(everyone(port), 120))
        reply = httpx.post(f"http://127.0.0.1:{port}/streams/v0", headers=headers, timeout=10,
                           json={"x": [0.1], "sample_rate": 44_100})
    finally:
        _stop(server)
    assert reply.status_code == 400 and "sample_rate: expected 16000" in reply.json()["error"]
    assert finals == [transcribe_offline(model, v) for v in voices]
