"""A lean HTTP/1.1 client for the backends: keep-alive connections pooled per backend, responses
parsed with httptools (llhttp, C), bodies handed over chunk by chunk.

Why not aiohttp or httpx: the router's budget is half a millisecond of CPU per proxied request
on a 2-core node, and a general-purpose client spends most of that on its own machinery. This
one does the few things the router needs: POST/GET, Content-Length or chunked responses,
timeouts for connect, first byte and idle time, and closing the socket to cancel a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The backend could not be reached or broke the response. `before_response` tells whether
    anything of the response had arrived (only then is a retry on another backend safe)."""

    def __init__(
        self, message: str, *, kind: str, before_response: bool, retried: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind  # "connect", "timeout", "reset", "protocol"
        self.before_response = before_response
        # The request was already sent twice: a pooled connection reset, then a fresh one.
        self.retried = retried


def _on_timeout(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.pooled = False  # idle in the pool: no request outstanding
        self.error: BaseException | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.pooled or self.complete:
            # Bytes outside the framing of the response being read (an upstream that answered
            # one request twice, or an LB's 408 on an idle connection): whatever they are, the
            # next request on this connection would read them as its answer. Close it.
            self.desync()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            self.error = exc or ConnectionResetError("the backend closed the connection")
        self._wake()

    def desync(self) -> None:
        """Never reuse this connection (review 2026-12-06 N2); a response already complete on
        it is still handed over whole."""
        self.keep_alive = False
        self.abort()
        self._wake()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            # A second response behind the one just read, in the same read.
            self.desync()
            raise _Desync()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until the parser or the socket reports something, or `timeout` seconds pass."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiter = waiter
        handle = loop.call_later(timeout, _on_timeout, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self.waiter = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Desync(Exception):
    """Raised in a parser callback: stop parsing a connection that is out of step."""


class Response:
    """A backend's response: status and headers now, the body through `next_chunk()`."""

    def __init__(self, pool: Pool, conn: _Connection, idle_timeout: float) -> None:
        self._pool, self._conn, self._idle = pool, conn, idle_timeout
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end. Raises UpstreamError."""
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.chunks.popleft()
            if conn.complete:
                self.release()
                return None
            if conn.error is not None or conn.closed:
                self.close()
                raise UpstreamError(
                    f"the backend broke off the response: {conn.error}",
                    kind="reset",
                    before_response=False,
                )
            try:
                await conn.wait(self._idle)
            except TimeoutError:
                self.close()
                raise UpstreamError(
                    f"the backend sent nothing for {self._idle:g} s",
                    kind="timeout",
                    before_response=False,
                ) from None

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool if the response was read to its end, else the socket is closed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed:
            self._pool.put_back(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Drop the connection: cancels the request on the backend (llama-server stops
        generating when its client goes away)."""
        if not self._released:
            self._released = True
            self._conn.abort()


class Pool:
    """Idle keep-alive connections to one backend."""

    def __init__(self, url: str, max_idle: int = 64) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            # TLS to in-cluster Services is left to a mesh; plain HTTP keeps the hot path lean.
            raise ValueError(f"backend url {url!r}: only http:// is supported")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.encode()
        self.max_idle = max_idle
        # Oldest first, and reused in that order: each connection rests as long as the pool
        # allows before its next request, so that a stray response shows up (and closes it)
        # while it is idle, not after the next request went out (docs/router.md, "Upstream").
        self.idle: deque[_Connection] = deque()
        # Set by a pool that speaks TLS (peers.PeerPool, for https:// peer routers).
        self.ssl_context: ssl.SSLContext | None = None

    def put_back(self, conn: _Connection) -> None:
        if len(self.idle) < self.max_idle and not conn.closed:
            conn._reset()
            conn.pooled = True
            self.idle.append(conn)
        else:
            conn.abort()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {
                "ssl": self.ssl_context,
                "server_hostname": self.host,
                "ssl_handshake_timeout": timeout,
            }
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port, **tls)
        except TimeoutError:
            raise UpstreamError(
                f"connect to {self.host}:{self.port} timed out after {timeout:g} s",
                kind="connect",
                before_response=True,
            ) from None
        except OSError as exc:  # ssl.SSLError is an OSError too
            # A TLS failure says what went wrong in its whole text, not in strerror.
            reason = exc if self.ssl_context is not None else (exc.strerror or exc)
            raise UpstreamError(
                f"cannot connect to {self.host}:{self.port}: {reason}",
                kind="connect",
                before_response=True,
            ) from None
        return conn

    async def request(
        self,
        method: bytes,
        path: bytes,
        body: bytes,
        *,
        extra_headers: bytes = b"",
        connect_timeout: float,
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> Response:
        """Send one request and wait for the response's status and headers."""
        head = b"".join(
            (
                method,
                b" ",
                self.prefix.encode(),
                path,
                b" HTTP/1.1\r\nhost: ",
                self.host_header,
                b"\r\ncontent-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\n",
                extra_headers,
                b"\r\n",
            )
        )
        # A pooled connection the backend has just closed (keep-alive timeout or max count)
        # fails before any response byte: that one is retried on a fresh connection, never on
        # another pooled one (the backend may have closed several at once).
        for attempt in (0, 1):
            conn = None
            while attempt == 0 and self.idle and conn is None:
                candidate = self.idle.popleft()
                if not candidate.closed:
                    candidate.pooled = False
                    conn = candidate
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self._connect(connect_timeout)
                except UpstreamError as exc:
                    if attempt == 0:
                        raise
                    # The request went out on a pooled connection that was reset, and now the
                    # backend refuses connections: it died holding the request (a crash).
                    raise UpstreamError(
                        f"the backend reset the connection and then refused a new one: {exc}",
                        kind="reset",
                        before_response=True,
                        retried=True,
                    ) from None
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            try:
                while not conn.headers_done:
                    if conn.error is not None or conn.closed:
                        raise ConnectionResetError(str(conn.error))
                    await conn.wait(first_byte_timeout)
            except TimeoutError:
                conn.abort()
                raise UpstreamError(
                    f"the backend sent no response within {first_byte_timeout:g} s",
                    kind="timeout",
                    before_response=True,
                ) from None
            except ConnectionResetError as exc:
                conn.abort()
                if reused and attempt == 0:
                    continue
                raise UpstreamError(
                    f"the backend closed the connection: {exc}",
                    kind="reset",
                    before_response=True,
                    retried=attempt == 1,
                ) from None
            except BaseException:
                conn.abort()  # cancelled (the client went away): drop the backend request
                raise
            return Response(self, conn, idle_timeout)
        raise AssertionError("unreachable")

    async def get(self, path: bytes, timeout: float) -> Response:
        """A bodiless GET (health and readiness reads), every phase bounded by `timeout`."""
        return await self.request(
            b"GET",
            path,
            b"",
            connect_timeout=timeout,
            first_byte_timeout=timeout,
            idle_timeout=timeout,
        )


def error_event(tail: bytes, message: str, code: str) -> bytes:
    """The SSE event that ends a stream an upstream broke, after a blank line if `tail` (the
    stream's last two bytes) does not already end one."""
    event = json.dumps({"error": {"message": message, "type": "upstream_error", "code": code}})
    sep = b"" if tail == b"\n\n" else b"\n\n"
    return sep + b"data: " + event.encode() + b"\n\n"


async def stop_loops(tasks: Iterable[asyncio.Task[None]], pools: Iterable[Pool]) -> None:
    """Cancel background loops and wait for each to end, then drop the pools' idle connections
    (the app's backends and the federation's peers stop alike)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for pool in pools:
        pool.close()
