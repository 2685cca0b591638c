"""The stream engine on the network: an ASGI app (Starlette) served by uvicorn.

Routes (JSON bodies; every route but ``/health`` needs ``Authorization: Bearer TOKEN`` when a
token is set)::

    GET    /health                 {"status": "ok", "streams": n}
    GET    /metrics                open/parked streams, steps/s, batch sizes, latency percentiles
    POST   /streams                {"id": optional}           -> 201 {"id": ...}
    GET    /streams/{id}                                      -> {"id", "steps", "parked"}
    POST   /streams/{id}           {"x": chunk, "at": opt.}   -> {"y": outputs, "steps": total}
    POST   /streams/{id}/reset                                -> {"id": ...}
    DELETE /streams/{id}                                      -> {"id": ...}
    WS     /streams/{id}/ws        send {"x": chunk, "at": optional}, receive {"y", "steps"};
                                   opens the stream if needed; {"close": true} closes it

A chunk is (T, I) floats, or (T,) token ids for a token model (through the application's adapter,
if the checkpoint has one: raw values in, data units out; a speech checkpoint takes audio
samples and answers words, and closing its stream answers the final transcript:
:mod:`lstmkit.streaming.speech`). ``at`` is the step count the stream must be at, else 409: a
client resending after a crash cannot apply a chunk twice. A bad request
gets an error for itself alone (``{"error": message}`` with 400, 401, 403, 404, 409, 413, 415 or
429; on a WebSocket the same object with ``"status"`` as a message, the connection kept),
never touching another stream. Every stream's state is saved to ``state_path`` on shutdown and
as ``durability`` says while running, and restored from it on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lstmkit._optional import require
from lstmkit.streaming.engine import (
    ChunkTooLong,
    EngineFull,
    StepMismatch,
    StreamEngine,
    UnknownStream,
)
from lstmkit.streaming.store import (
    ForeignState,
    Journal,
    journals,
    load_table,
    model_identity,
    move_aside,
    read_journal,
    replay,
    save_table,
)

log = logging.getLogger(__name__)

DURABILITY = ("snapshot", "journal", "fsync")


@dataclass(frozen=True)
class ServerConfig:
    """How ``lstmkit serve`` runs; the engine's bounds included."""

    host: str = "127.0.0.1"
    """Address to bind; the default accepts local clients only. Another address needs a token
    (or insecure)."""
    port: int = 8000
    """TCP port (0: any free port)."""
    token: str | None = None
    """Bearer token every request but /health must carry; the LSTMKIT_TOKEN environment
    variable sets it too, out of sight of the process list. Without one, requests must name a
    loopback Host and come from no other Origin."""
    insecure: bool = False
    """Allow a non-loopback host without a token (anyone who reaches it may use every stream)."""
    max_streams: int = 1024
    """Streams open at once."""
    idle_timeout: float | None = 600.0
    """Seconds without a push before a stream is evicted (parked: its next push restores it)."""
    max_request_bytes: int = 1 << 20
    """Largest request body or WebSocket message, in bytes (413 past it)."""
    max_chunk: int = 4096
    """Most steps in one push (413 past it)."""
    rate: float | None = None
    """Requests per second allowed per client address (burst: as many, at least 1); None: no
    limit."""
    state_path: str | None = None
    """File the streams' states are saved to on shutdown and resumed from on start (default:
    the checkpoint's path + ".streams.safetensors")."""
    snapshot_every: float | None = None
    """Also save the streams every this many seconds; None: only on shutdown."""
    durability: str = "snapshot"
    """What a kill -9 can lose. "snapshot": every change since the last save (snapshot_every
    seconds, or all since start without it). "journal": nothing acknowledged (each round's
    changes reach the operating system before the replies); a power loss may lose the last
    moments. "fsync": nothing acknowledged even on power loss (one disk flush per round)."""

    threads: int = 1
    """Torch threads for the engine's rounds: one by default, since the small products of a
    round gain nothing from more and lose about 10x to their synchronisation on a shared
    machine (docs/speech.md)."""

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f"threads: expected at least 1, got {self.threads}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: expected 0..65535, got {self.port}")
        for name in ("max_streams", "max_request_bytes", "max_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("rate", "snapshot_every", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}: expected None or > 0, got {value}")
        if self.token is not None and not self.token.strip():
            raise ValueError("token: expected a non-empty secret, got an empty one (an empty "
                             "token would let anyone in)")
        if self.durability not in DURABILITY:
            raise ValueError(f"durability: expected one of {list(DURABILITY)}, got "
                             f"{self.durability!r}")
        if self.token is None and not self.insecure and not _loopback(self.host):
            raise ValueError(f"host: expected a loopback address without a token, got "
                             f"{self.host!r} (set a token, or insecure to serve it to anyone)")


def _loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(authority: str) -> str:
    """The host of a Host header or an Origin's authority, without the port."""
    return urlsplit(f"//{authority}").hostname or ""


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


CLIENT_ERRORS = (HTTPError, UnknownStream, EngineFull, ValueError, TypeError, OSError)
"""What a request can fail with on its own: a status for the client, not a bug."""


def _status(error: BaseException) -> int:
    if isinstance(error, HTTPError):
        return error.status
    if isinstance(error, UnknownStream):
        return 404
    if isinstance(error, EngineFull):
        return 429
    if isinstance(error, ChunkTooLong):
        return 413
    if isinstance(error, StepMismatch):
        return 409
    if isinstance(error, OSError):  # the journal could not be written: nothing was applied
        return 503
    return 400


class _RateLimiter:
    """A token bucket per client address, holding at least one request's token."""

    def __init__(self, rate: float | None):
        self.rate, self.buckets = rate, {}
        self.burst = None if rate is None else max(1.0, rate)

    def check(self, client: str) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            raise HTTPError(429, f"rate: expected at most {self.rate:g} requests/s per client, "
                                 "got more")
        self.buckets[client] = (tokens - 1.0, now)


def create_app(engine: StreamEngine, config: ServerConfig = ServerConfig(), adapter=None):
    """The ASGI app serving ``engine`` as ``config`` says; ``adapter`` (from
    :func:`lstmkit.streaming.adapters.for_model`) turns clients' raw values into the model's
    inputs and its outputs into data units."""
    require("starlette", "serve", "lstmkit serve")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    server = _Server(engine, config, adapter)

    def endpoint(handler, auth=True):
        async def run(request):
            try:
                server.limiter.check(request.client.host if request.client else "?")
                server.check_origin(request.headers)
                if auth:
                    server.authorize(request.headers)
                status, body = await handler(request)
            except CLIENT_ERRORS as error:
                status, body = _status(error), {"error": str(error)}
            except Exception as error:  # a bug: say so, and keep serving
                log.exception("request failed")
                status, body = 500, {"error": f"internal error ({type(error).__name__})"}
            return JSONResponse(body, status_code=status)
        return run

    routes = [
        Route("/health", endpoint(server.health, auth=False), methods=["GET"]),
        Route("/metrics", endpoint(server.metrics), methods=["GET"]),
        Route("/streams", endpoint(server.open), methods=["POST"]),
        Route("/streams/{id}", endpoint(server.info), methods=["GET"]),
        Route("/streams/{id}", endpoint(server.push), methods=["POST"]),
        Route("/streams/{id}", endpoint(server.close), methods=["DELETE"]),
        Route("/streams/{id}/reset", endpoint(server.reset), methods=["POST"]),
        WebSocketRoute("/streams/{id}/ws", server.websocket),
    ]
    return Starlette(routes=routes, lifespan=server.lifespan)


class _Server:
    def __init__(self, engine: StreamEngine, config: ServerConfig, adapter):
        import anyio

        self.engine, self.config, self.adapter = engine, config, adapter
        self.limiter = _RateLimiter(config.rate)
        # Pushes wait in threads while a round runs; enough threads to batch every stream.
        self.threads = anyio.CapacityLimiter(min(config.max_streams, 1024))
        self._to_thread = anyio.to_thread.run_sync
        self.batcher = _Batcher(engine, self.call)
        # An adapter with per-stream state of its own takes the streams' pushes, resets and
        # closes (lstmkit.streaming.speech).
        self.stateful = hasattr(adapter, "bind")
        if self.stateful:
            adapter.bind(engine, self.batcher.push, self.call)
        self.identity = model_identity(engine.model)
        self._saving = threading.Lock()
        self._generation = 0  # the journal generation a state file saved now continues at

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
            if self.engine.journal is not None:
                self.engine.journal.close()

    # --- durability ---------------------------------------------------------------------------

    def restore(self) -> None:
        """Resume the streams of the state file and its journals; then save them at once, so
        that a state file and a fresh journal describe them from here on."""
        path = self.config.state_path
        if path is None:
            return
        path = Path(path)
        generation, meta, resumed = 0, {}, 0
        if path.is_file():
            try:
                table, meta = load_table(path, model=self.identity)
            except ForeignState:
                raise
            except ValueError as error:
                move_aside(path, str(error))
            else:
                self.engine.load(table)
                generation, resumed = int(meta.get("journal", 0)), len(table.ids)
        logs = journals(path, since=generation)
        try:
            replayed = sum(replay(self.engine, read_journal(wal)) for wal in logs)
        except ValueError as error:
            log.error("%s; its changes are not replayed", error)
            replayed = 0
        self._generation = max([generation] + [int(w.name.rsplit(".", 1)[1]) for w in logs]) + 1
        if self.config.durability != "snapshot":
            self.engine.journal = Journal(path, self._generation,
                                          fsync=self.config.durability == "fsync")
        if resumed or replayed:
            log.info("resumed %d streams from %s (%d journal records replayed)",
                     len(self.engine.streams()) + len(self.engine.parked()), path, replayed)
        self.save()

    def save(self) -> None:
        if self.config.state_path is None:
            return
        with self._saving:
            table, mark = self.engine.export()
            generation = self._generation if mark is None else mark
            save_table(self.config.state_path, table, model=self.identity, journal=generation)
            for wal in journals(self.config.state_path):
                if int(wal.name.rsplit(".", 1)[1]) < generation:
                    wal.unlink(missing_ok=True)
        log.info("saved %d streams to %s", len(table.ids), self.config.state_path)

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
            try:
                await self.call(self.save)
            except Exception:  # a full disk must not end the saves for good
                log.exception("periodic save to %s failed; retrying in %g s",
                              self.config.state_path, self.config.snapshot_every)

    # --- guards -------------------------------------------------------------------------------

    def authorize(self, headers) -> None:
        token = self.config.token
        if token is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPError(401, "authorization: expected 'Bearer <token>', got a missing or "
                                 "wrong token")

    def check_origin(self, headers) -> None:
        """Without a token, only loopback clients that are not a web page of another site:
        the Host names this machine (no DNS rebinding) and any Origin is loopback too."""
        if self.config.token is not None:
            return
        if not self.config.insecure or _loopback(self.config.host):
            host = headers.get("host", "")
            if not _loopback(_host_name(host)):
                raise HTTPError(403, f"host: expected a loopback host name without a token, got "
                                     f"{host[:100]!r}")
        origin = headers.get("origin")
        if origin is not None and not _loopback(urlsplit(origin).hostname or ""):
            raise HTTPError(403, f"origin: expected no Origin or a loopback one without a "
                                 f"token, got {origin[:100]!r}")

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
        if not data:
            return {}
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind.lower() != "application/json":
            raise HTTPError(415, f"content-type: expected application/json, got {kind[:60]!r}")
        return _parse(data)

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

    async def info(self, request):
        stream_id = request.path_params["id"]
        steps = self.engine.steps(stream_id)
        return 200, {"id": stream_id, "steps": steps,
                     "parked": stream_id in self.engine.parked()}

    async def push(self, request):
        return 200, await self._push(request.path_params["id"], await self.body(request))

    async def reset(self, request):
        stream_id = request.path_params["id"]
        if self.stateful:
            await self.adapter.reset(stream_id)
        else:
            await self.call(self.engine.reset, stream_id)
        return 200, {"id": stream_id}

    async def close(self, request):
        return 200, {"id": request.path_params["id"],
                     **await self._close(request.path_params["id"])}

    async def _close(self, stream_id: str) -> dict:
        """Close a stream; what a stateful adapter answers for it (speech: the transcript)."""
        if self.stateful:
            return await self.adapter.close(stream_id)
        await self.call(self.engine.close, stream_id)
        return {}

    async def _push(self, stream_id: str, body: dict) -> dict:
        if "x" not in body:
            raise ValueError("body: expected {\"x\": chunk}, got no \"x\"")
        at = body.get("at")
        if at is not None and (type(at) is not int or at < 0):
            raise ValueError(f"at: expected a step count (an int >= 0), got {at!r}")
        if self.stateful:
            return await self.adapter.push(stream_id, body, at)
        x = body["x"] if self.adapter is None else self.adapter.encode(stream_id, body["x"])
        pushed = await self.batcher.push(stream_id, x, at)
        if self.adapter is None:
            return {"y": pushed.y.tolist(), "steps": pushed.steps}
        return {**self.adapter.decode(stream_id, pushed), "steps": pushed.steps}

    async def websocket(self, ws):
        stream_id = ws.path_params["id"]
        try:
            self.check_origin(ws.headers)
            self.authorize(ws.headers)
            if stream_id not in self.engine.streams() and stream_id not in self.engine.parked():
                await self.call(self.engine.open, stream_id)
        except (HTTPError, ValueError, EngineFull) as error:
            await ws.close(code=1008, reason=_reason(error))
            return
        await ws.accept()
        client = ws.client.host if ws.client else "?"
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                reply = await self._message(stream_id, message["text"], client)
            else:
                reply = {"error": "message: expected a text frame of JSON, got a binary frame",
                         "status": 400}
            await ws.send_text(json.dumps(reply, allow_nan=False))
            if reply.get("closed"):
                await ws.close()
                return

    async def _message(self, stream_id: str, text: str, client: str) -> dict:
        try:
            self.limiter.check(client)
            limit = self.config.max_request_bytes
            if len(text) > limit // 4 and len(text.encode("utf-8", "surrogatepass")) > limit:
                raise HTTPError(413, f"message: expected at most {limit} bytes, got more")
            body = _parse(text.encode("utf-8", "surrogatepass"))
            if body.get("close"):
                return {"closed": stream_id, **await self._close(stream_id)}
            if "x" not in body:
                raise ValueError("message: expected {\"x\": chunk} or {\"close\": true}, "
                                 "got neither")
            return await self._push(stream_id, body)
        except CLIENT_ERRORS as error:
            return {"error": str(error), "status": _status(error)}
        except Exception as error:  # a bug: say so, keep the connection
            log.exception("message failed")
            return {"error": f"internal error ({type(error).__name__})", "status": 500}


def _reason(error: BaseException) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8."""
    return str(error).encode("utf-8", "replace")[:120].decode("utf-8", "ignore")


class _Batcher:
    """Gathers the pushes that arrive together on the event loop into one
    :meth:`StreamEngine.push_each`, so that a message costs no thread hop of its own and
    concurrent streams are stepped in one round; each push gets its own stream's outcome, and
    none is ever pushed twice. One call is in flight at a time; what arrives meanwhile (and a
    stream's second chunk) goes in the next."""

    def __init__(self, engine: StreamEngine, call):
        self.engine, self.call = engine, call
        self.queue: list[tuple[str, object, int | None, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def push(self, stream_id: str, x_chunk, at: int | None = None):
        """The stream's :class:`~lstmkit.streaming.engine.Pushed`, or its own error."""
        x = self.engine.check_chunk(x_chunk, finite=False)  # a bad chunk fails here, alone
        # (finiteness is checked in the round, row by row, with the outputs and states)
        future = asyncio.get_running_loop().create_future()
        self.queue.append((stream_id, x, at, future))
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
            chunks = {sid: x for sid, x, _, _ in batch}
            ats = {sid: at for sid, _, at, _ in batch if at is not None}
            try:
                outcomes = await self.call(self.engine.push_each, chunks, ats or None)
            except Exception as error:  # a bug: fail these pushes rather than leave them hanging
                log.exception("push_each failed")
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for sid, _, _, future in batch:
                if future.done():
                    continue
                outcome = outcomes[sid]
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


def _parse(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"body: expected JSON, got invalid JSON ({error})") from None
    except RecursionError:
        raise ValueError("body: expected JSON nested a few levels deep, got it nested too "
                         "deep") from None
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
    return body


def check_state_file(path: str | Path, model) -> None:
    """Raise ForeignState if ``path`` holds another model's streams (checked before serving; a
    corrupt file is left for the server to move aside)."""
    if Path(path).is_file():
        try:
            load_table(path, model=model_identity(model))
        except ForeignState:
            raise
        except ValueError:
            pass


def serve(checkpoint: str | Path, config: ServerConfig = ServerConfig()) -> None:
    """Load ``checkpoint`` and serve it until interrupted (SIGINT/SIGTERM save the streams)."""
    from dataclasses import replace

    from lstmkit.checkpoint import load
    from lstmkit.streaming.adapters import for_model

    uvicorn = require("uvicorn", "serve", "lstmkit serve")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    import torch

    torch.set_num_threads(config.threads)
    model = load(checkpoint)
    adapter = for_model(model)
    if config.state_path is None:
        config = replace(config, state_path=f"{checkpoint}.streams.safetensors")
    check_state_file(config.state_path, model)
    engine = StreamEngine(model, max_streams=config.max_streams, idle_timeout=config.idle_timeout,
                          max_chunk=config.max_chunk)
    app = create_app(engine, config, adapter)
    # Exempt everything loaded so far (torch, the model) from the cyclic collector: its full
    # passes over them otherwise stall a busy server for tens of ms at random.
    gc.freeze()
    # Messages a little over max_request_bytes still arrive, to be answered 413; far larger
    # ones are closed by the protocol layer (1009, message too big).
    # No per-message deflate: compressing each small reply cost about as much as computing it.
    uvicorn.run(app, host=config.host, port=config.port,
                ws_max_size=2 * config.max_request_bytes + 4096, ws_per_message_deflate=False,
                log_level="info")
