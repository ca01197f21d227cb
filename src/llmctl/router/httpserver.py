"""A small HTTP/1.1 server on asyncio: requests parsed with httptools (llhttp, C), keep-alive,
streamed (chunked) responses with write flow control, and the request's task cancelled when its
client goes away.

Every client is bounded (issue 19; the settings are `limits:` in the router config):
- time: a request's headers must arrive within `headerTimeoutSeconds` of its first byte, its
  body within `bodyTimeoutSeconds` of its headers (else 408 and the connection is closed); a
  connection with no request in progress is closed after `keepAliveTimeoutSeconds`;
- space: the request line and headers are counted while they are read, before httptools
  buffers them (431 past `maxHeaderBytes`, 414 past `maxUrlBytes`); a body over
  `maxBodyBytes` is answered 413 as soon as that is known and the rest is read and dropped;
  pipelined requests stop reading from the socket until the one before them is answered, and
  the next response waits until the client has read the previous one;
- count: at most `maxConnections` at once. At the cap the longest-idle keep-alive connection
  (idle for a second at least) is closed to make room; when none is, the new client gets a
  fast 503 (logged, at most once a second).

The router's hot path cannot afford an ASGI stack (see docs/router.md for the figures); this is
the part of one that the router uses and nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

from llmctl.router.table import Limits

log = logging.getLogger("llmctl.router")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_EVICTABLE_AFTER_IDLE_SECONDS = 1.0
# File descriptors the process keeps for itself (listening socket, backend connections, logs).
_FD_RESERVE = 256


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "too_large", "keep_alive", "version")

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: dict[str, str],
        body: bytes,
        too_large: bool,
        keep_alive: bool,
        version: str = "1.1",
    ) -> None:
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.body = body
        self.too_large = too_large
        self.keep_alive = keep_alive
        self.version = version


Handler = Callable[[Request, "Connection"], Awaitable[None]]


def _head(status: int, headers: list[tuple[bytes, bytes]], extra: bytes) -> bytes:
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"Unknown"), b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (extra, b"\r\n")
    return b"".join(parts)


def error_body(message: str, type_: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def _error_response(status: int, message: str, code: str, extra: bytes = b"") -> bytes:
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    body = error_body(message, type_, code)
    return (
        _head(
            status,
            [(b"content-type", b"application/json")],
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n" + extra,
        )
        + body
    )


class _Reject(Exception):
    """Raised in a parser callback: answer `status` and close the connection."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Server:
    """The listening socket and its connections: the cap, and shutdown in steps."""

    def __init__(self, handler: Handler, limits: Limits) -> None:
        self.handler = handler
        self.limits = limits
        self.max_connections = limits.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft - _FD_RESERVE < self.max_connections:
            self.max_connections = max(16, soft - _FD_RESERVE)
            log.warning(
                "limits.maxConnections %d lowered to %d: the process may open %d files",
                limits.max_connections,
                self.max_connections,
                soft,
            )
        self.connections: set[Connection] = set()
        self.draining = False  # answers say `connection: close` from now on
        self.refused = 0
        self._refused_logged = 0
        self._last_refusal_log = 0.0
        self._server: asyncio.Server | None = None
        self._idle_waiter: asyncio.Future[None] | None = None
        # Called with the status of every answer the server gives itself (408, 413, 414, 431,
        # 503 at the cap...), so that the app can count them with the rest.
        self.on_refusal: Callable[[int], None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Timeouts are deadlines on each connection, checked by one sweep: a timer per phase of
        # every request cost more CPU than the rest of the server's work for that request.
        self._tick = min(
            1.0,
            limits.header_timeout_seconds / 4,
            limits.body_timeout_seconds / 4,
            limits.keep_alive_timeout_seconds / 4,
        )

    async def start(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self.handler, self.limits, self),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        self._sweeper = loop.call_later(self._tick, self._sweep)
        return self._server

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.deadline <= now:
                conn.expired()
        self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    # --- the cap ---------------------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        """Room for one more connection: evict the longest-idle one at the cap if need be."""
        if len(self.connections) >= self.max_connections:
            # Idle for a second at least: a connection just opened has not sent its request
            # yet, and clients reconnecting at once would otherwise evict each other in turn.
            settled = time.monotonic() - _EVICTABLE_AFTER_IDLE_SECONDS
            idle = [
                c for c in self.connections if c.idle_since is not None and c.idle_since <= settled
            ]
            if not idle:
                self._refuse()
                return False
            oldest = min(idle, key=lambda c: cast(float, c.idle_since))
            oldest.close()
        self.connections.add(conn)
        return True

    def count(self, status: int) -> None:
        if self.on_refusal is not None:
            self.on_refusal(status)

    def _refuse(self) -> None:
        self.refused += 1
        self.count(503)
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:
            log.warning(
                "at limits.maxConnections (%d busy connections): %d new connection(s) refused "
                "with 503",
                self.max_connections,
                self.refused - self._refused_logged,
            )
            self._last_refusal_log = now
            self._refused_logged = self.refused

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._maybe_idle()

    # --- shutdown --------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Answers from now on close their connection (clients reconnect elsewhere)."""
        self.draining = True

    def stop_accepting(self) -> None:
        """Close the listening socket and every connection with nothing in progress."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle_since is not None:
                conn.close()

    def busy(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def _maybe_idle(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done() and self.busy() == 0:
            waiter.set_result(None)

    async def wait_idle(self, timeout: float) -> bool:
        """Until no request is in progress on any connection, or `timeout` seconds pass."""
        if self.busy() == 0:
            return True
        self._idle_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle_waiter
        except TimeoutError:
            return self.busy() == 0
        finally:
            self._idle_waiter = None
        return True

    def abort_all(self) -> int:
        """Cancel what is still in progress (its handler sends a last error event or a 503),
        then close every connection. Returns how many requests were cut."""
        cut = 0
        for conn in list(self.connections):
            if conn.task is not None and not conn.task.done():
                cut += 1
                conn.shutting_down = True
                conn.task.cancel()
        return cut

    def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close()


class Connection(asyncio.Protocol):
    """One client connection. Requests on it are answered one after the other."""

    def __init__(self, handler: Handler, limits: Limits, server: Server | None = None) -> None:
        self.handler = handler
        self.limits = limits
        self.max_body = limits.max_body_bytes
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self.shutting_down = False  # set when the server cancels the task at its deadline
        self.idle_since: float | None = None  # set while no request is in progress
        self._can_write: asyncio.Future[None] | None = None
        self._streaming = False
        self._chunked = True
        self._head_only = False
        self._responded = False
        self._paused = False
        self._stop_parsing = False  # too many pipelined requests: read no further
        self._discard_until_end = False  # answered early (413): drop the body, then close
        self._discarded = 0
        self.deadline = float("inf")  # when the phase below times out (Server._sweep)
        self._timer_kind = ""
        self._in_message = False
        self._headers_done = False
        self._head_bytes = 0
        self._version = "1.1"
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    @property
    def busy(self) -> bool:
        return (self.task is not None and not self.task.done()) or bool(self.pending)

    @property
    def streaming(self) -> bool:
        return self._streaming

    @property
    def responded(self) -> bool:
        """Whether the status line of the current request's response has gone out."""
        return self._responded

    # --- timers ----------------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        self._timer_kind = kind
        self.deadline = time.monotonic() + seconds

    def _disarm(self) -> None:
        self.deadline = float("inf")
        self._timer_kind = ""

    def expired(self) -> None:
        kind = self._timer_kind
        self._disarm()
        if self.closed:
            return
        if kind == "idle" or self._discard_until_end:
            self.close()
        elif self.task is not None and not self.task.done():
            # A response is going out: never write into it. Whatever comes next is late.
            self.keep_alive = False
            self._stop_parsing = True
        elif kind == "head":
            self._reject(408, "the request headers did not arrive in time", "request_timeout")
        else:
            self._reject(408, "the request body did not arrive in time", "request_timeout")

    def _settle(self) -> None:
        """Between requests: arm the timer that fits what is left on the connection."""
        if self.closed:
            return
        if self._in_message:
            self.idle_since = None
            if self._headers_done:
                self._arm("body", self.limits.body_timeout_seconds)
            else:
                self._arm("head", self.limits.header_timeout_seconds)
        else:
            self.idle_since = time.monotonic()
            self._arm("idle", self.limits.keep_alive_timeout_seconds)
            if self.server is not None:
                self.server._maybe_idle()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        if self.server is not None and not self.server.admit(self):
            self.closed = True
            self.transport.write(
                _error_response(
                    503,
                    "the router is at its connection limit; retry shortly",
                    "too_many_connections",
                    b"retry-after: 1\r\n",
                )
            )
            # Half-close and drop what the client sends for a moment: closing outright with
            # its request unread would reset the connection and lose the 503.
            try:
                self.transport.write_eof()
            except (NotImplementedError, OSError, RuntimeError):
                self.transport.close()
                return
            asyncio.get_running_loop().call_later(1.0, self.transport.abort)
            return
        self._settle()

    def data_received(self, data: bytes) -> None:
        if self.closed or self._stop_parsing:
            return
        if self._headers_done and not self._discard_until_end:
            self._feed(data)  # a body: bounded in on_body
            return
        if (
            not self._discard_until_end
            and len(data) <= self.limits.max_header_bytes - self._head_bytes
        ):
            self._head_bytes += len(data)  # the usual case: a whole small request
            self._feed(data)
            return
        self._feed_sliced(data)

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except (_Reject, httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc)

    def _parse_failed(self, exc: Exception) -> None:
        """Answer what feeding the parser raised: a callback's _Reject (raised directly, or
        wrapped by httptools in a callback error), an upgrade, or a malformed request."""
        cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
        if isinstance(cause, _Reject):
            self._reject(cause.status, cause.message, cause.code)
        elif isinstance(exc, httptools.HttpParserUpgrade):
            self._reject(400, "protocol upgrades are not supported", "bad_http")
        elif not isinstance(cause, _StopParsing):
            self._reject(400, f"malformed HTTP request: {cause or exc}", "bad_http")

    def _feed_sliced(self, data: bytes) -> None:
        """Feed a piece at a time, so that the head never exceeds its limit in the parser."""
        view = memoryview(data)
        try:
            while view:
                if self._discard_until_end:
                    self._discarded += len(view)
                    if self._discarded > 16 * self.max_body:
                        self.close()
                        return
                if self._headers_done or self._discard_until_end:
                    piece, view = view, view[:0]
                else:
                    # Count the head while it arrives: httptools keeps a header value whole
                    # in memory until its end, so a limit checked in on_header comes too late.
                    allowance = self.limits.max_header_bytes - self._head_bytes
                    if allowance <= 0:
                        raise _Reject(
                            431,
                            f"the request line and headers exceed "
                            f"{self.limits.max_header_bytes} bytes",
                            "headers_too_large",
                        )
                    piece, view = view[:allowance], view[allowance:]
                    self._head_bytes += len(piece)
                self.parser.feed_data(piece)
                if self._stop_parsing or self.closed:
                    return
        except (_Reject, httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.pending.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client went away: stop its work, and the backend's
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        if self.server is not None:
            self.server.forget(self)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True

    # --- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._begin()
        self._in_message = True
        self._headers_done = False
        self.idle_since = None
        if self.task is None or self.task.done():
            self._arm("head", self.limits.header_timeout_seconds)
        else:
            self._disarm()  # armed when the response in progress is done

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self.limits.max_url_bytes:
            raise _Reject(
                414,
                f"the request target exceeds {self.limits.max_url_bytes} bytes",
                "url_too_long",
            )
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        idle = self.task is None or self.task.done()
        if idle:
            self._arm("body", self.limits.body_timeout_seconds)
        self._version = version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Reject(505, f"HTTP/{version} is not supported", "http_version_not_supported")
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._too_large = True
            if idle:
                self._answer_too_large()
                return
        if idle and self._headers.get("expect", "").lower() == "100-continue":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._discard_until_end:
            return
        self._size += len(body)
        if self._size > self.max_body:
            if not self._too_large:
                self._too_large = True
                self._body.clear()
                if self.task is None or self.task.done():
                    self._answer_too_large()
                    return
            if self._size > 16 * self.max_body:
                self.close()  # pipelined behind another answer: not worth reading on
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._headers_done = False
        self._head_bytes = 0
        if self._discard_until_end:
            self.close()
            raise _StopParsing()
        self._disarm()
        request = Request(
            self.parser.get_method().decode("latin-1"),
            self._url,
            self._headers,
            b"".join(self._body),
            self._too_large,
            self.parser.should_keep_alive(),
            self._version,
        )
        if self.task is None or self.task.done():
            self._start(request)
            return
        self.pending.append(request)
        if not self._paused and self.transport is not None:
            # Read nothing more until the answers catch up: a pipelining client cannot queue
            # more than what one read brings in.
            self._paused = True
            self.transport.pause_reading()
        if len(self.pending) >= self.limits.max_pipelined_requests:
            request.keep_alive = False  # answer these, then close: the client re-sends the rest
            self._stop_parsing = True
            raise _StopParsing()

    # --- early answers -----------------------------------------------------------------------
    def _answer_too_large(self) -> None:
        """413 now, before the body is read; the body is then read and dropped (so the client
        sees the answer, not a reset), and the connection closed."""
        assert self.transport is not None
        self.transport.write(
            _error_response(
                413,
                f"the request body is larger than the limit of {self.max_body} bytes",
                "request_too_large",
            )
        )
        self.keep_alive = False
        self._discard_until_end = True
        self.idle_since = None
        if self.server is not None:
            self.server.count(413)

    def _reject(self, status: int, message: str, code: str) -> None:
        if self.transport is None or self.closed:
            return
        self.keep_alive = False
        self._stop_parsing = True
        if self.task is not None and not self.task.done():
            # An answer is going out: let it finish (never write into it), then close.
            self.pending.clear()
            if not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        self.transport.write(_error_response(status, message, code))
        if self.server is not None:
            self.server.count(status)
        self.close()

    # --- running handlers ------------------------------------------------------------------
    def _start(self, request: Request) -> None:
        self.idle_since = None
        self._disarm()
        self.keep_alive = request.keep_alive and not request.too_large
        self._head_only = request.method == "HEAD"
        self._chunked = request.version != "1.0"
        self._responded = False
        self.task = asyncio.get_running_loop().create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self.handler(request, self)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            if not self._streaming and not self._responded and not self.closed:
                self.send(
                    500,
                    [(b"content-type", b"application/json")],
                    b'{"error":{"message":"internal router error","type":"server_error",'
                    b'"code":"internal_error"}}',
                )
        finally:
            self._streaming = False
        if self.closed:
            return
        if not self.keep_alive or self.transport is None:
            self.close()
            return
        waiter = self._can_write
        if waiter is not None and not waiter.done() and not await self.writable():
            return  # the client did not read the last answer in time
        if self.pending:
            self._start(self.pending.popleft())
            return
        if self._paused and not self._stop_parsing:
            self._paused = False
            self.transport.resume_reading()
        self._settle()

    # --- responses -------------------------------------------------------------------------
    def _closing(self) -> bool:
        if self.server is not None and self.server.draining:
            self.keep_alive = False
        return not self.keep_alive

    def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.closed or self.transport is None:
            return
        self._responded = True
        extra = b"content-length: " + str(len(body)).encode() + b"\r\n"
        if self._closing():
            extra += b"connection: close\r\n"
        head = _head(status, headers, extra)
        self.transport.write(head if self._head_only else head + body)

    def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.closed or self.transport is None:
            return
        self._responded = True
        self._streaming = True
        if self._chunked:
            extra = b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
        else:  # HTTP/1.0 knows no chunks: the body ends when the connection does
            self.keep_alive = False
            extra = b"cache-control: no-cache\r\n"
        if self._closing():
            extra += b"connection: close\r\n"
        self.transport.write(_head(status, headers, extra))

    def write_chunk_now(self, data: bytes) -> None:
        """Write without waiting for the client to read (a last event before closing)."""
        if self.closed or self.transport is None or not data:
            return
        if self._chunked:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.transport.write(data)

    async def writable(self) -> bool:
        """Wait until the client has read enough of what was written; a client that reads
        nothing for keepAliveTimeoutSeconds is disconnected. False once the connection is gone."""
        waiter = self._can_write
        if waiter is not None and not waiter.done():
            try:
                async with asyncio.timeout(self.limits.keep_alive_timeout_seconds):
                    await asyncio.shield(waiter)
            except TimeoutError:
                log.info("closing a connection whose client reads nothing")
                self.close()
                if self.transport is not None:
                    self.transport.abort()
        return not self.closed

    async def write_chunk(self, data: bytes) -> None:
        self.write_chunk_now(data)
        waiter = self._can_write
        if waiter is not None and not waiter.done():
            await self.writable()  # the client reads slower than the backend writes

    def end_stream(self) -> None:
        self._streaming = False
        if not self.closed and self.transport is not None and self._chunked:
            self.transport.write(b"0\r\n\r\n")


class _StopParsing(Exception):
    """Raised in a parser callback: feed nothing more for now."""


async def serve(handler: Handler, host: str, port: int, limits: Limits) -> Server:
    server = Server(handler, limits)
    await server.start(host, port)
    return server
