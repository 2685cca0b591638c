"""A load and fault run against a real ``lstmkit serve`` over 127.0.0.1.

Concurrent HTTP clients push random-length chunks to their own streams (each push says at
which step it starts, ``at``), with opens, deletes, resets and bad requests mixed in; meanwhile
the server is killed (SIGKILL) and later stopped (SIGTERM), and restarted each time. After a
fault a client asks its stream's step count (``GET /streams/{id}``) and resends from there.
Every output a client received is compared with the model run on that stream alone, and no
acknowledged step may be missing after a restart. ``make test`` runs it bounded
(tests/streaming/test_load_faults.py); for a longer run::

    PYTHONPATH=src:. python -m tests.streaming.load_faults --clients 64 --steps 400
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

TOKEN = "load-fault-token"
BAD_REQUESTS = {
    "invalid JSON": (b"{not json", 400),
    "wrong shape": (b'{"x": [[1.0, 2.0]]}', 400),
    "NaN": (b'{"x": [[NaN, 0.0, 0.0]]}', 400),
    "deep nesting": (b'{"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
    "too many steps": (b'{"x": ' + str([[0.0, 0.0, 0.0]] * 65).encode() + b"}", 413),
    "wrong at": (b'{"x": [[0.0, 0.0, 0.0]], "at": 999999}', 409),
}


@dataclass
class Figures:
    streams: int = 0
    pushes: int = 0
    steps: int = 0
    opens: int = 0
    deletes: int = 0
    resets: int = 0
    bad: int = 0
    bad_unexpected: list = field(default_factory=list)
    kills: int = 0
    stops: int = 0
    resumes: int = 0
    lost_steps: int = 0
    max_difference: float = 0.0

    def lines(self) -> list[str]:
        return [f"streams {self.streams}, pushes acknowledged {self.pushes}, steps "
                f"{self.steps}, opens {self.opens}, deletes {self.deletes}, resets "
                f"{self.resets}",
                f"faults: {self.kills} kill -9, {self.stops} SIGTERM; resumes after a fault "
                f"{self.resumes}; acknowledged steps lost {self.lost_steps}",
                f"bad requests {self.bad} (answered otherwise than expected: "
                f"{len(self.bad_unexpected)}); max |output - model alone| "
                f"{self.max_difference:.2e}"]


class Server:
    """``lstmkit serve`` in a subprocess, restartable on the same port and state."""

    def __init__(self, checkpoint: Path, state: Path, durability: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.args = [sys.executable, "-m", "lstmkit", "serve", str(checkpoint), "--port",
                     str(self.port), "--state-path", str(state), "--durability", durability,
                     "--max-chunk", "64"]
        self.env = {**os.environ, "LSTMKIT_TOKEN": TOKEN, "OMP_NUM_THREADS": "1",
                    "PYTHONPATH": os.pathsep.join(sys.path)}
        self.process = None
        self.log = b""

    def start(self, timeout: float = 60) -> None:
        import httpx

        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).is_success:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"server did not start: {self.process.communicate()[0][-2000:]}")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        try:
            self.log += self.process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


class Client:
    def __init__(self, k: int, x: torch.Tensor, expected: np.ndarray, rng: random.Random,
                 figures: Figures, up: asyncio.Event):
        self.sid, self.x, self.expected, self.rng = f"c{k}", x, expected, rng
        self.figures, self.up = figures, up
        self.pos = 0  # the step count the server acknowledged

    async def run(self, http, chunk: int) -> None:
        await self.call(http, "POST", "/streams", json={"id": self.sid})
        self.figures.streams += 1
        while self.pos < len(self.x):
            roll = self.rng.random()
            if roll < 0.08:
                await self.bad(http)
            elif roll < 0.11:
                await self.call(http, "POST", f"/streams/{self.sid}/reset", to_zero=True)
                self.pos, self.figures.resets = 0, self.figures.resets + 1
            elif roll < 0.13:
                await self.call(http, "DELETE", f"/streams/{self.sid}", to_zero=True)
                await self.call(http, "POST", "/streams", json={"id": self.sid}, to_zero=True)
                self.pos = 0
                self.figures.deletes, self.figures.opens = (self.figures.deletes + 1,
                                                            self.figures.opens + 1)
            else:
                await self.push(http, self.rng.randint(1, chunk))

    async def push(self, http, n: int) -> None:
        start = self.pos
        part = self.x[start:start + n]
        reply = await self.call(http, "POST", f"/streams/{self.sid}",
                                json={"x": part.tolist(), "at": start})
        if reply is None:  # a fault: the server says where the stream is
            return
        if reply.status_code == 409:
            await self.resync(http)
            return
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["steps"] == start + len(part), body
        y = np.asarray(body["y"])
        self.figures.max_difference = max(self.figures.max_difference, float(
            np.abs(y - self.expected[start:start + len(part)]).max()))
        self.pos = body["steps"]
        self.figures.pushes += 1
        self.figures.steps += len(part)

    async def bad(self, http) -> None:
        name = self.rng.choice(sorted(BAD_REQUESTS))
        body, status = BAD_REQUESTS[name]
        reply = await self.call(http, "POST", f"/streams/{self.sid}", content=body,
                                headers={"content-type": "application/json"})
        if reply is None:
            return
        self.figures.bad += 1
        if reply.status_code != status:
            self.figures.bad_unexpected.append((name, reply.status_code, reply.text[:200]))

    async def resync(self, http) -> None:
        """After a fault: the stream's step count on the server; an acknowledged step must be
        there."""
        self.figures.resumes += 1
        reply = await self.call(http, "GET", f"/streams/{self.sid}")
        if reply is None:
            return
        if reply.status_code == 404:  # the open itself was never acknowledged
            await self.call(http, "POST", "/streams", json={"id": self.sid})
            steps = 0
        else:
            steps = reply.json()["steps"]
        self.figures.lost_steps += max(0, self.pos - steps)
        self.pos = steps

    async def call(self, http, method: str, url: str, to_zero: bool = False, **kwargs):
        """The reply; None after a transport error (then once the server is back, resynced).

        ``to_zero``: the request itself sends the stream back to step 0 (a reset, a delete and
        reopen), so after a fault that hit it the server may rightly be at 0: the request was
        applied, not acknowledged steps lost. Any other count below the acknowledged one is a
        loss."""
        import httpx

        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError:
            await self.up.wait()
            while True:  # the server may be going down again: retry until it answers
                try:
                    await asyncio.sleep(0.05)
                    await self.up.wait()
                    reply = await http.get(f"/streams/{self.sid}")
                    break
                except httpx.TransportError:
                    continue
            self.figures.resumes += 1
            steps = reply.json()["steps"] if reply.status_code == 200 else 0
            if reply.status_code == 404:
                await http.post("/streams", json={"id": self.sid})
            if not (to_zero and steps == 0):
                self.figures.lost_steps += max(0, self.pos - steps)
            self.pos = steps
            return None


async def _faults(server: Server, figures: Figures, total: int, up: asyncio.Event,
                  finished: asyncio.Event) -> None:
    """Kill -9 at a third of the work, SIGTERM at two thirds; restart each time. Both faults
    happen: one the clients outrun (a fast machine finishes the last third within the tenth
    of a second uvicorn takes to act on SIGTERM) comes once they have finished."""
    for fraction, sig in ((1 / 3, signal.SIGKILL), (2 / 3, signal.SIGTERM)):
        while figures.steps < fraction * total and not finished.is_set():
            await asyncio.sleep(0.01)
        up.clear()
        await asyncio.to_thread(server.stop, sig)
        if sig == signal.SIGKILL:
            figures.kills += 1
        else:
            figures.stops += 1
        await asyncio.to_thread(server.start)
        up.set()


async def _run(server: Server, model, clients: int, steps: int, chunk: int, seed: int):
    import httpx

    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    xs = [torch.randn(steps, model.config.layer.cell.input_size, generator=gen)
          for _ in range(clients)]
    truth = copy.deepcopy(model).double()  # float64: the bound holds on any CPU
    with torch.no_grad():
        expected = [truth(x[None].double())[0][0].numpy() for x in xs]
    figures, up = Figures(), asyncio.Event()
    up.set()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"},
                                 limits=limits) as http:
        runners = [Client(k, x, e, random.Random(rng.random()), figures, up)
                   for k, (x, e) in enumerate(zip(xs, expected))]
        finished = asyncio.Event()
        faults = asyncio.create_task(_faults(server, figures, clients * steps, up, finished))
        await asyncio.gather(*(c.run(http, chunk) for c in runners))
        finished.set()
        await faults
        for c in runners:  # every stream ends where its client thinks, after the last restart
            reply = await http.get(f"/streams/{c.sid}")
            figures.lost_steps += abs(reply.json()["steps"] - c.pos)
    return figures


def run(clients: int = 8, steps: int = 40, chunk: int = 5, seed: int = 0,
        durability: str = "journal") -> Figures:
    """The whole run; returns its figures."""
    from lstmkit.checkpoint import save
    from tests.tiny_models import forecaster

    model = forecaster()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.safetensors"
        save(checkpoint, model)
        server = Server(checkpoint, Path(tmp) / "streams.safetensors", durability)
        server.start()
        try:
            return asyncio.run(asyncio.wait_for(_run(server, model, clients, steps, chunk,
                                                     seed), 600))
        finally:
            if server.process.poll() is None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="steps per stream")
    parser.add_argument("--chunk", type=int, default=5, help="most steps in one push")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--durability", default="journal", choices=["journal", "fsync"])
    args = parser.parse_args()
    started = time.perf_counter()
    figures = run(args.clients, args.steps, args.chunk, args.seed, args.durability)
    print("\n".join(figures.lines()))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
