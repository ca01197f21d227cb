"""A small HTTP/1.1 server on asyncio: requests parsed with httptools (llhttp, C), keep-alive,
a body limit, streamed (chunked) responses with write flow control, and the request's task
cancelled when its client goes away.

The router's hot path cannot afford an ASGI stack (see docs/router.md for the figures); this is
the part of one that the router uses and nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger("llmctl.router")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_HEADER_BYTES = 64 * 1024


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "too_large", "keep_alive")

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: dict[str, str],
        body: bytes,
        too_large: bool,
        keep_alive: bool,
    ) -> None:
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.body = body
        self.too_large = too_large
        self.keep_alive = keep_alive


Handler = Callable[[Request, "Connection"], Awaitable[None]]


def _head(status: int, headers: list[tuple[bytes, bytes]], extra: bytes) -> bytes:
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"Unknown"), b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (extra, b"\r\n")
    return b"".join(parts)


class Connection(asyncio.Protocol):
    """One client connection. Requests on it are answered one after the other."""

    def __init__(self, handler: Handler, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self._can_write: asyncio.Future[None] | None = None
        self._streaming = False
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad_request("protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._bad_request(f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client went away: stop its work, and the backend's
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request headers are too large")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._too_large = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True
            self._body.clear()
            if self._size > 16 * self.max_body and self.transport is not None:
                self.transport.close()  # not worth reading further to say 413
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        request = Request(
            self.parser.get_method().decode("latin-1"),
            self._url,
            self._headers,
            b"".join(self._body),
            self._too_large,
            self.parser.should_keep_alive(),
        )
        if self.task is None or self.task.done():
            self._start(request)
        else:
            self.pending.append(request)

    # --- running handlers ------------------------------------------------------------------
    def _start(self, request: Request) -> None:
        self.keep_alive = request.keep_alive and not request.too_large
        self.task = asyncio.get_running_loop().create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self.handler(request, self)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            if not self._streaming and not self.closed:
                self.send(
                    500,
                    [(b"content-type", b"application/json")],
                    b'{"error":{"message":"internal router error","type":"server_error",'
                    b'"code":"internal_error"}}',
                )
        if self.closed:
            return
        if not self.keep_alive:
            assert self.transport is not None
            self.transport.close()
            return
        if self.pending:
            self._start(self.pending.popleft())

    def _bad_request(self, message: str) -> None:
        if self.transport is None or self.closed:
            return
        self.keep_alive = False
        body = (
            '{"error":{"message":'
            + _json_str(message)
            + ',"type":"invalid_request_error","code":"bad_http"}}'
        ).encode()
        self.transport.write(
            _head(
                400,
                [(b"content-type", b"application/json")],
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n",
            )
            + body
        )
        self.transport.close()

    # --- responses -------------------------------------------------------------------------
    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.closed or self.transport is None:
            return
        extra = b"content-length: " + str(len(body)).encode() + b"\r\n"
        if not self.keep_alive:
            extra += b"connection: close\r\n"
        self.transport.write(_head(status, headers, extra) + body)

    def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.closed or self.transport is None:
            return
        self._streaming = True
        extra = b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
        if not self.keep_alive:
            extra += b"connection: close\r\n"
        self.transport.write(_head(status, headers, extra))

    async def write_chunk(self, data: bytes) -> None:
        if self.closed or self.transport is None or not data:
            return
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        if self._can_write is not None and not self._can_write.done():
            await self._can_write  # the client reads slower than the backend writes

    def end_stream(self) -> None:
        self._streaming = False
        if not self.closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")


def _json_str(text: str) -> str:
    import json

    return json.dumps(text)


async def serve(handler: Handler, host: str, port: int, max_body: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Connection(handler, max_body), host, port, reuse_address=True, backlog=1024
    )
