"""The router as an ASGI application (issue 25), for any ASGI server: `RouterAsgi` reads each
request and the answer goes back through a `Reply`. `llmctl router serve` runs the same app on
uvicorn's protocol without ASGI messages (router/server.py: `serve` and `Exchange`, the same
request and answer, cheaper); this module is what other servers (granian, in
benchmarks/router_overhead.py) run.

What the app needs of HTTP is small: the method, the exact path, the headers as a dict, the
whole body, and an answer written whole (`send`) or as a stream (`start_stream`,
`write_chunk`, `end_stream`). This module turns ASGI's messages into that, and enforces what
the server has no setting for: the body's size (413 before it is read, when Content-Length says
so, else as soon as it is exceeded).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from llmctl.router.relay import Sink

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSE = (b"connection", b"close")
_NO_CACHE = (b"cache-control", b"no-cache")


class Request:
    """One client request, read whole: what the app routes on."""

    __slots__ = ("method", "path", "headers", "body", "too_large", "version")

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        too_large: bool = False,
        version: str = "1.1",
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.too_large = too_large
        self.version = version


class Lifecycle(Protocol):
    """What the ASGI layer reads of the server's state (server.Guard provides it)."""

    @property
    def draining(self) -> bool: ...  # every answer closes its connection
    @property
    def cutting(self) -> bool: ...  # the drain deadline passed: work left is being cancelled


class Reply:
    """The answer to one request, written through ASGI `send` (relay.Sink). `responded` tells
    whether the status line went out; an answer to an HTTP/1.0 client that is a stream is sent
    whole at its end (1.0 knows no chunks, and a server would chunk it)."""

    __slots__ = ("_send", "_life", "_buffer", "responded", "streaming", "closed", "_stream_head")

    def __init__(self, send: Send, life: Lifecycle, http10: bool) -> None:
        self._send = send
        self._life = life
        self._buffer: list[bytes] | None = [] if http10 else None
        self._stream_head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.responded = False
        self.streaming = False
        self.closed = False  # the client went away (set by the ASGI layer)

    @property
    def shutting_down(self) -> bool:
        """The drain deadline cut this request (its handler sends a last event or a 503)."""
        return self._life.cutting

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [*headers, _CLOSE] if self._life.draining else headers

    async def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.responded:
            return
        self.responded = True
        headers = [*self._headers(headers), (b"content-length", str(len(body)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.responded:
            return
        self.responded = True
        self.streaming = True
        if self._buffer is not None:
            self._stream_head = (status, [*headers, _NO_CACHE, _CLOSE])
            return
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*self._headers(headers), _NO_CACHE],
            }
        )
        # The head goes out now, not with the first event (which may be seconds away).
        await self._send({"type": "http.response.body", "body": b"", "more_body": True})

    async def write_chunk(self, data: bytes) -> None:
        if not data:
            return
        if self._buffer is not None:
            self._buffer.append(data)
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self) -> None:
        if not self.streaming:
            return
        self.streaming = False
        if self._buffer is not None and self._stream_head is not None:
            status, headers = self._stream_head
            self.responded = False
            await self.send(status, headers, b"".join(self._buffer))
            return
        await self._send({"type": "http.response.body", "body": b""})


Handler = Callable[[Request, Sink], Awaitable[None]]


def error_body(message: str, type_: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


class RouterAsgi:
    """The ASGI callable: reads the request (bounded), hands it to `handler` with a Reply.
    `on_start`/`on_stop` run at ASGI lifespan events (granian sends them; router/server.py
    runs them itself)."""

    def __init__(
        self,
        handler: Handler,
        life: Lifecycle,
        max_body_bytes: int,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.handler = handler
        self.life = life
        self.max_body = max_body_bytes
        self.on_start, self.on_stop = on_start, on_stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        method = scope["method"]
        version = scope["http_version"]
        reply = Reply(send, self.life, version == "1.0")
        body = b""
        too_large = False
        try:
            length = headers.get("content-length")
            if length is not None and int(length) > self.max_body:
                too_large = True
            elif length not in (None, "0") or "transfer-encoding" in headers:
                read = await self._read_body(receive)
                if read is None:
                    return  # the client went away
                body, too_large = read
            request = Request(
                method, scope["raw_path"].decode("latin-1"), headers, body, too_large, version
            )
            await self.handler(request, reply)
        except asyncio.CancelledError:
            # The client went away (server.py cancels the task) or the drain deadline cut it:
            # the handler has already answered what it could.
            reply.closed = True

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool] | None:
        """The body, and whether it was over the limit (then it is not kept); None if the client
        disconnected. The body's deadline is the server's (server.py)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", True  # the rest is read and dropped by the server
            parts.append(chunk)
            if not message.get("more_body", False):
                return (parts[0] if len(parts) == 1 else b"".join(parts)), False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.on_start is not None:
                    await self.on_start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_stop is not None:
                    await self.on_stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _NoDrain:
    draining = False
    cutting = False


def app_from_env() -> RouterAsgi:
    """An ASGI app for any server, from the config file named by $LLMCTL_ROUTER_CONFIG: what
    benchmarks/router_overhead.py runs under granian to compare servers. `llmctl router serve`
    runs uvicorn with the limits and the drain of router/server.py instead."""
    from pathlib import Path

    from llmctl.router.app import RouterApp, load_api_keys
    from llmctl.router.serve import read_config

    config = read_config(Path(os.environ["LLMCTL_ROUTER_CONFIG"]))
    app = RouterApp(config, load_api_keys(config.api_keys))
    return RouterAsgi(app.handle, _NoDrain(), config.limits.max_body_bytes, app.start, app.stop)
