"""The real server (``lstmkit serve`` under uvicorn, in a subprocess) over 127.0.0.1: many
concurrent WebSocket clients, then a kill and restart mid-stream. Bounded in clients and time."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch

from lstmkit.checkpoint import save
from tests.tiny_models import forecaster

websockets = pytest.importorskip("websockets.asyncio.client")
pytest.importorskip("uvicorn")

TOKEN = "loopback-token"
CLIENTS, CHUNKS, CHUNK = 24, 6, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(checkpoint, port, state):
    env = {**os.environ, "LSTMKIT_TOKEN": TOKEN, "PYTHONPATH": os.pathsep.join(sys.path),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lstmkit", "serve", str(checkpoint), "--port", str(port),
         "--state-path", str(state)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not start: {process.communicate()[0].decode()[-2000:]}")


def _stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return out.decode()


async def _client(port, sid, x, chunks):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ys = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/streams/{sid}/ws",
                                  additional_headers=headers, open_timeout=20) as ws:
        for k in chunks:
            await ws.send(json.dumps({"x": x[k * CHUNK:(k + 1) * CHUNK].tolist()}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert "y" in reply, reply
            ys += reply["y"]
            assert reply["steps"] == (k + 1) * CHUNK
    return ys


async def _oversized(port):
    """A message a little over --max-request-bytes (1 MiB by default): a 413 reply, not a
    protocol close."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with websockets.connect(f"ws://127.0.0.1:{port}/streams/big/ws",
                                  additional_headers=headers, open_timeout=20) as ws:
        await ws.send(json.dumps({"x": [[0.5, 0.5, 0.5]] * 70_000}))  # about 1.1 MB
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        await ws.send(json.dumps({"close": True}))
        await ws.recv()
    return reply


async def _all(port, xs, chunks):
    return await asyncio.gather(*(_client(port, f"c{k}", x, chunks) for k, x in enumerate(xs)))


def _offline(model, x):
    with torch.no_grad():
        return model(x[None])[0][0].numpy()


def test_many_clients_then_a_restart_mid_stream_keep_every_stream_exact(tmp_path):
    model = forecaster()
    checkpoint, state = tmp_path / "model.safetensors", tmp_path / "streams.safetensors"
    save(checkpoint, model)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(CHUNKS * CHUNK, 3, generator=gen) for _ in range(CLIENTS)]
    port = _free_port()
    server = _start(checkpoint, port, state)
    try:
        head = asyncio.run(asyncio.wait_for(_all(port, xs, range(CHUNKS // 2)), 60))
        assert asyncio.run(asyncio.wait_for(_oversized(port), 60))["status"] == 413
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert metrics["streams"] == CLIENTS
        assert metrics["stream_steps"] == CLIENTS * CHUNK * (CHUNKS // 2)
    finally:
        log = _stop(server)
    assert f"saved {CLIENTS} streams" in log
    port = _free_port()
    server = _start(checkpoint, port, state)
    try:
        tail = asyncio.run(asyncio.wait_for(_all(port, xs, range(CHUNKS // 2, CHUNKS)), 60))
    finally:
        log = _stop(server)
    assert f"resumed {CLIENTS} streams" in log
    for x, a, b in zip(xs, head, tail):
        np.testing.assert_allclose(a + b, _offline(model, x), rtol=1e-5, atol=1e-6)
