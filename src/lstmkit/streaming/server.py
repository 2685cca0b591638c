"""The stream engine on the network: an ASGI app (Starlette) served by uvicorn.

Routes (JSON bodies; every route but ``/health`` needs ``Authorization: Bearer TOKEN`` when a
token is set)::

    GET    /health                 {"status": "ok", "streams": n}
    GET    /metrics                open/parked streams, steps/s, batch sizes, latency percentiles
    POST   /streams                {"id": optional}           -> 201 {"id": ...}
    POST   /streams/{id}           {"x": chunk}               -> {"y": outputs, "steps": total}
    POST   /streams/{id}/reset                                -> {"id": ...}
    DELETE /streams/{id}                                      -> {"id": ...}
    WS     /streams/{id}/ws        send {"x": chunk}, receive {"y": ..., "steps": ...};
                                   opens the stream if needed; {"close": true} closes it

A chunk is (T, I) floats, or (T,) token ids for a token model. A bad request gets an error for
itself alone (``{"error": message}`` with 400, 401, 404, 413 or 429; on a WebSocket the same
object as a message, the connection kept), never touching another stream. On shutdown every
stream's state is saved to ``state_path`` and restored from it on start, so a restart loses no
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lstmkit._optional import require
from lstmkit.streaming.engine import EngineFull, StreamEngine, UnknownStream
from lstmkit.streaming.store import load_snapshots, save_snapshots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """How ``lstmkit serve`` runs; the engine's bounds included."""

    host: str = "127.0.0.1"
    """Address to bind; the default accepts local clients only."""
    port: int = 8000
    """TCP port (0: any free port)."""
    token: str | None = None
    """Bearer token every request but /health must carry; the LSTMKIT_TOKEN environment
    variable sets it too, out of sight of the process list."""
    max_streams: int = 1024
    """Streams open at once."""
    idle_timeout: float | None = 600.0
    """Seconds without a push before a stream is evicted (parked: its next push restores it)."""
    max_request_bytes: int = 1 << 20
    """Largest request body or WebSocket message, in bytes."""
    max_chunk: int = 4096
    """Most steps in one push."""
    rate: float | None = None
    """Requests per second allowed per client address (burst: as many); None: no limit."""
    state_path: str | None = None
    """File the streams' states are saved to on shutdown and resumed from on start (default:
    the checkpoint's path + ".streams.safetensors")."""
    snapshot_every: float | None = None
    """Also save the streams every this many seconds, so that a crash (SIGKILL, power loss)
    loses at most that much; None: only on shutdown."""

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: expected 0..65535, got {self.port}")
        for name in ("max_streams", "max_request_bytes", "max_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("rate", "snapshot_every", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}: expected None or > 0, got {value}")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _status(error: BaseException) -> int:
    if isinstance(error, HTTPError):
        return error.status
    if isinstance(error, UnknownStream):
        return 404
    if isinstance(error, EngineFull):
        return 429
    return 400


class _RateLimiter:
    """A token bucket per client address."""

    def __init__(self, rate: float | None):
        self.rate, self.buckets = rate, {}

    def check(self, client: str) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            raise HTTPError(429, f"rate: expected at most {self.rate:g} requests/s per client, "
                                 "got more")
        self.buckets[client] = (tokens - 1.0, now)


def create_app(engine: StreamEngine, config: ServerConfig = ServerConfig()):
    """The ASGI app serving ``engine`` as ``config`` says."""
    require("starlette", "serve", "lstmkit serve")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    server = _Server(engine, config)

    def endpoint(handler, auth=True):
        async def run(request):
            try:
                server.limiter.check(request.client.host if request.client else "?")
                if auth:
                    server.authorize(request.headers)
                status, body = await handler(request)
            except (HTTPError, UnknownStream, EngineFull, ValueError, TypeError) as error:
                status, body = _status(error), {"error": str(error)}
            return JSONResponse(body, status_code=status)
        return run

    routes = [
        Route("/health", endpoint(server.health, auth=False), methods=["GET"]),
        Route("/metrics", endpoint(server.metrics), methods=["GET"]),
        Route("/streams", endpoint(server.open), methods=["POST"]),
        Route("/streams/{id}", endpoint(server.push), methods=["POST"]),
        Route("/streams/{id}", endpoint(server.close), methods=["DELETE"]),
        Route("/streams/{id}/reset", endpoint(server.reset), methods=["POST"]),
        WebSocketRoute("/streams/{id}/ws", server.websocket),
    ]
    return Starlette(routes=routes, lifespan=server.lifespan)


class _Server:
    def __init__(self, engine: StreamEngine, config: ServerConfig):
        import anyio

        self.engine, self.config = engine, config
        self.limiter = _RateLimiter(config.rate)
        # Pushes wait in threads while a round runs; enough threads to batch every stream.
        self.threads = anyio.CapacityLimiter(min(config.max_streams, 1024))
        self._to_thread = anyio.to_thread.run_sync
        self.batcher = _Batcher(engine, self.call)

    async def call(self, fn, *args):
        return await self._to_thread(fn, *args, limiter=self.threads)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.restore()
        tasks = [asyncio.create_task(self.sweep_forever()),
                 asyncio.create_task(self.snapshot_forever())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            self.save()

    def restore(self) -> None:
        path = self.config.state_path
        if path is None or not Path(path).is_file():
            return
        snapshots, _ = load_snapshots(path)
        for stream_id, snapshot in snapshots.items():
            self.engine.open(stream_id, snapshot)
        log.info("resumed %d streams from %s", len(snapshots), path)

    def save(self) -> None:
        if self.config.state_path is None:
            return
        snapshots = self.engine.snapshots()
        save_snapshots(self.config.state_path, snapshots)
        log.info("saved %d streams to %s", len(snapshots), self.config.state_path)

    async def sweep_forever(self) -> None:
        if self.engine.idle_timeout is None:
            return
        while True:
            await asyncio.sleep(min(1.0, self.engine.idle_timeout / 4))
            await self.call(self.engine.sweep)

    async def snapshot_forever(self) -> None:
        if self.config.snapshot_every is None:
            return
        while True:
            await asyncio.sleep(self.config.snapshot_every)
            await self.call(self.save)

    def authorize(self, headers) -> None:
        token = self.config.token
        if token is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPError(401, "authorization: expected 'Bearer <token>', got a missing or "
                                 "wrong token")

    async def body(self, request) -> dict:
        declared = request.headers.get("content-length")
        limit = self.config.max_request_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request: expected at most {limit} bytes, got {declared}")
        data = b""
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise HTTPError(413, f"request: expected at most {limit} bytes, got more")
        return _parse(data) if data else {}

    # --- handlers: each returns (status, JSON body) ------------------------------------------

    async def health(self, request):
        return 200, {"status": "ok", "streams": len(self.engine.streams())}

    async def metrics(self, request):
        summary = self.engine.stats.summary()
        summary.update(streams=len(self.engine.streams()), parked=len(self.engine.parked()),
                       max_streams=self.engine.max_streams)
        return 200, summary

    async def open(self, request):
        body = await self.body(request)
        stream_id = await self.call(self.engine.open, body.get("id"))
        return 201, {"id": stream_id}

    async def push(self, request):
        body = await self.body(request)
        if "x" not in body:
            raise ValueError("body: expected {\"x\": chunk}, got no \"x\"")
        y = await self.batcher.push(request.path_params["id"], body["x"])
        return 200, {"y": y.tolist(), "steps": self._steps(request.path_params["id"])}

    async def reset(self, request):
        await self.call(self.engine.reset, request.path_params["id"])
        return 200, {"id": request.path_params["id"]}

    async def close(self, request):
        await self.call(self.engine.close, request.path_params["id"])
        return 200, {"id": request.path_params["id"]}

    def _steps(self, stream_id: str) -> int | None:
        try:
            return self.engine.steps(stream_id)
        except UnknownStream:  # closed meanwhile by another client
            return None

    async def websocket(self, ws):
        from starlette.websockets import WebSocketDisconnect

        stream_id = ws.path_params["id"]
        try:
            self.authorize(ws.headers)
            if stream_id not in self.engine.streams() and stream_id not in self.engine.parked():
                await self.call(self.engine.open, stream_id)
        except (HTTPError, ValueError, EngineFull) as error:
            await ws.close(code=1008, reason=str(error)[:120])
            return
        await ws.accept()
        client = ws.client.host if ws.client else "?"
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                reply = await self._message(stream_id, await ws.receive_text(), client)
                await ws.send_text(json.dumps(reply))
                if reply.get("closed"):
                    await ws.close()
                    return

    async def _message(self, stream_id: str, text: str, client: str) -> dict:
        try:
            self.limiter.check(client)
            limit = self.config.max_request_bytes
            if len(text) > limit:
                raise HTTPError(413, f"message: expected at most {limit} bytes, got {len(text)}")
            body = _parse(text.encode())
            if body.get("close"):
                await self.call(self.engine.close, stream_id)
                return {"closed": stream_id}
            if "x" not in body:
                raise ValueError("message: expected {\"x\": chunk} or {\"close\": true}, "
                                 "got neither")
            y = await self.batcher.push(stream_id, body["x"])
            return {"y": y.tolist(), "steps": self._steps(stream_id)}
        except (HTTPError, UnknownStream, EngineFull, ValueError, TypeError) as error:
            return {"error": str(error), "status": _status(error)}


class _Batcher:
    """Gathers the pushes that arrive together on the event loop into one
    :meth:`StreamEngine.push_many`, so that a message costs no thread hop of its own and
    concurrent streams are stepped in one round. One call is in flight at a time; what arrives
    meanwhile (and a stream's second chunk) goes in the next."""

    def __init__(self, engine: StreamEngine, call):
        self.engine, self.call = engine, call
        self.queue: list[tuple[str, object, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def push(self, stream_id: str, x_chunk):
        x = self.engine.check_chunk(x_chunk)  # a bad chunk fails here, alone
        future = asyncio.get_running_loop().create_future()
        self.queue.append((stream_id, x, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.queue:
            batch, later, seen = [], [], set()
            for item in self.queue:
                (later if item[0] in seen else batch).append(item)
                seen.add(item[0])
            self.queue = later
            try:
                results = await self.call(self.engine.push_many, {s: x for s, x, _ in batch})
            except (UnknownStream, EngineFull, ValueError, TypeError):
                await self._one_by_one(batch)  # find whose push failed; the others go on
                continue
            except Exception as error:  # a bug: fail these pushes rather than leave them hanging
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for stream_id, _, future in batch:
                if not future.done():
                    future.set_result(results[stream_id])

    async def _one_by_one(self, batch) -> None:
        for stream_id, x, future in batch:
            try:
                result = await self.call(self.engine.push, stream_id, x)
            except (UnknownStream, EngineFull, ValueError, TypeError) as error:
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)


def _parse(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"body: expected JSON, got invalid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
    return body


def serve(checkpoint: str | Path, config: ServerConfig = ServerConfig()) -> None:
    """Load ``checkpoint`` and serve it until interrupted (SIGINT/SIGTERM save the streams)."""
    from dataclasses import replace

    from lstmkit.checkpoint import load

    uvicorn = require("uvicorn", "serve", "lstmkit serve")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    model = load(checkpoint)
    if config.state_path is None:
        config = replace(config, state_path=f"{checkpoint}.streams.safetensors")
    engine = StreamEngine(model, max_streams=config.max_streams, idle_timeout=config.idle_timeout,
                          max_chunk=config.max_chunk)
    app = create_app(engine, config)
    # Exempt everything loaded so far (torch, the model) from the cyclic collector: its full
    # passes over them otherwise stall a busy server for tens of ms at random.
    gc.freeze()
    uvicorn.run(app, host=config.host, port=config.port, ws_max_size=config.max_request_bytes,
                log_level="info")
