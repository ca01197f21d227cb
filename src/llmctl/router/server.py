"""Serving the router on uvicorn's HTTP/1.1 protocol (httptools + uvloop), with every bound on
clients the router had on its own server (issue 19) kept (issue 25).

uvicorn's protocol parses requests (llhttp) and owns the connection and its flow control. Its
per-request ASGI cycle is replaced here by the router's own, `Exchange`: one task per request
runs the router's app directly (no ASGI scope or messages; issue 25's bound on CPU per request,
docs/router.md "Performance"), answers pipelined requests in order with reading paused, waits
for the client to read, sends `100 Continue` and drops the body of HEAD answers, as uvicorn's
cycle does. What uvicorn has no setting for is added in the subclass of its protocol,
`GuardedHttpTools`, and one `Guard` (router/guard.py) shared by all connections:

- time: a request's headers must arrive within `headerTimeoutSeconds` of its first byte and its
  body within `bodyTimeoutSeconds` of its headers (else 408, closed); a connection with nothing
  in progress closes after `keepAliveTimeoutSeconds`, and so does one whose client reads
  nothing of its answer for that long. Deadlines are checked by one sweep a tick, never a
  timer per request (those cost more CPU than the rest of a request's work);
- space: the request line and headers are counted as they arrive, before llhttp buffers them
  (431 past `maxHeaderBytes` or 100 fields, 414 past `maxUrlBytes`); at most
  `maxPipelinedRequests` are read ahead, then the connection answers them and closes;
- count: at most `maxConnections`. At the cap the longest-idle connection (idle a second at
  least) is closed to make room, found in O(1) (idle connections are kept oldest first); with
  none idle the new client gets a fast 503;
- conformance (RFC 9112, review 2026-12-06 §3): trailer fields never become headers, an
  HTTP/1.1 request needs exactly one valid Host, a transfer coding other than `chunked` is
  501 and any on HTTP/1.0 is 400, HTTP/1.x with x > 1 is served as 1.1, other versions 505;
- the client going away cancels its request's task (and so the backend request).

The listening socket and the drain on SIGTERM are `run_listener`'s and app.py's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from llmctl.router.asgi import Request, RouterAsgi, error_body
from llmctl.router.errors import JSON as _JSON
from llmctl.router.guard import Guard

log = logging.getLogger("llmctl.router")

# Header fields in one request (hyper's default; nginx refuses 1,000 small ones too).
MAX_HEADER_FIELDS = 100
# RFC 9110 §7.2: uri-host [":" port]; a reg-name, an IPv4 address or a bracketed IP literal.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_INF = float("inf")


class _Reject(Exception):
    """Raised in a parser callback: answer `status` and close the connection."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _StopParsing(Exception):
    """Raised in a parser callback: feed nothing more on this connection."""


def error_response(status: int, message: str, code: str, extra: bytes = b"") -> bytes:
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    body = error_body(message, type_, code)
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode()),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            extra,
            b"\r\n",
            body,
        )
    )


class Exchange:
    """One request and its answer on a GuardedHttpTools connection: what uvicorn's
    `RequestResponseCycle` is for an ASGI app, for the router's app called directly.

    It holds the state uvicorn's protocol reads of a cycle (`response_complete`,
    `disconnected`, `keep_alive`, `body`, `more_body`, `message_event`) and is the app's answer
    (relay.Sink: `send`, `start_stream`, `write_chunk`, `end_stream`), writing to the transport
    with uvicorn's flow control. No ASGI scope or messages, no event per request, and an
    answer's head and body go out in one send: on loopback a send costs about as much as the
    rest of the router's work for a request, and the ASGI layer cost the router 1.3x the CPU of
    the server it replaced (docs/router.md, "Performance"). asgi.Reply is the same answer for
    other servers, through ASGI messages."""

    def __init__(
        self,
        conn: GuardedHttpTools,
        method: str,
        path: bytes,
        version: str,
        keep_alive: bool,
        headers: dict[str, str],
        waiting_for_100_continue: bool = False,
    ) -> None:
        # Every attribute set here, none left to a class default: CPython 3.11 reads an
        # instance's own attributes on a fast path, class attributes through the generic lookup.
        self.conn = conn
        self.transport = conn.transport
        self.flow = conn.flow
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.head_only = method == "HEAD"
        self.body = b""
        self.task: asyncio.Task[None] | None = None  # set by the protocol when it starts it
        # an answer the protocol gives itself (a refusal queued behind pipelined answers)
        self.refusal: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        # uvicorn's names, read by its protocol
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = waiting_for_100_continue
        self.more_body = True
        self.disconnected = False
        self.response_started = False  # the status line went out
        self.response_complete = False
        self._event: asyncio.Event | None = None  # made when someone waits for the body
        # relay.Sink's
        self.responded = False  # the answer is under way (for an HTTP/1.0 stream: buffered)
        self.streaming = False
        self.chunked = False
        self._buffer: list[bytes] | None = None  # an HTTP/1.0 stream, sent whole at its end
        self._stream_head: tuple[int, list[tuple[bytes, bytes]]] = (200, [])

    @property
    def message_event(self) -> asyncio.Event:
        """uvicorn's protocol sets it when the client goes away; `read_body` waits on it."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()

    # --- running the app ----------------------------------------------------------------------
    async def run(self) -> None:
        """The app for this exchange, and what uvicorn's `run_asgi` does around an app: an
        exception or an app that returns without answering still ends the exchange (a 500, or
        the connection closed). One coroutine for all of it: each level of coroutines costs
        its part again at every await of the request."""
        conn = self.conn
        try:
            try:
                if self.refusal is not None:
                    await self.send(*self.refusal)
                else:
                    request = self._request(conn.max_body)
                    if request is None:
                        read = await self.read_body(conn.max_body)
                        if read is None:
                            return  # the client went away
                        request = self._read_request(*read)
                    await conn.handle(request, self)
            except asyncio.CancelledError:
                # The client went away (the protocol cancels the task) or the drain deadline
                # cut it: the handler has already answered what it could.
                pass
            if not self.response_started and not self.disconnected:
                log.error("no answer to %s %r", self.method, self.path)
                self._fail()
            elif not self.response_complete and not self.disconnected:
                log.error("an unfinished answer to %s %r", self.method, self.path)
                self.transport.close()
        except BaseException as exc:
            log.error("unhandled error answering %s %r", self.method, self.path, exc_info=exc)
            if not self.response_started:
                self._fail()
            else:
                self.transport.close()
        finally:
            if self.task is not None:
                conn.tasks.discard(self.task)

    def _request(self, limit: int) -> Request | None:
        """The request for the app, its body read already (the usual case: it came with the
        head) or over `limit` (413, too_large) by its Content-Length. None: the body is still
        on its way (`read_body`, then `_read_request`)."""
        headers = self.headers
        length = headers.get("content-length")
        if length is not None and int(length) > limit:
            body, too_large = b"", True
        elif not (self.more_body or self.disconnected or self.waiting_for_100_continue):
            body, self.body = self.body, b""
            too_large = len(body) > limit
            if too_large:
                body = b""
        elif length not in (None, "0") or "transfer-encoding" in headers:
            return None
        else:
            body, too_large = b"", False
        return Request(
            self.method, self.path.decode("latin-1"), headers, body, too_large, self.version
        )

    def _read_request(self, body: bytes, too_large: bool) -> Request:
        return Request(
            self.method, self.path.decode("latin-1"), self.headers, body, too_large, self.version
        )

    def _fail(self) -> None:
        if self.disconnected or self.transport.is_closing():
            return
        self.response_started = True
        self.keep_alive = False
        self.transport.write(_INTERNAL_ERROR)
        self._complete()

    async def read_body(self, limit: int) -> tuple[bytes, bool] | None:
        """The rest of the body, and whether it was over `limit` bytes (then it is not kept:
        the rest is read and dropped, as for any request answered early). None if the client
        went away. The body's deadline is the protocol's."""
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        parts: list[bytes] = []
        size = 0
        while True:
            if self.disconnected or self.response_complete:
                return None
            chunk, self.body = self.body, b""
            size += len(chunk)
            if size > limit:
                return b"", True
            if chunk:
                parts.append(chunk)
            if not self.more_body:
                return b"".join(parts), False
            event = self.message_event
            event.clear()
            self.flow.resume_reading()
            await event.wait()

    # --- the answer (relay.Sink) ------------------------------------------------------------
    @property
    def shutting_down(self) -> bool:
        """The drain deadline cut this request (its handler sends a last event or a 503)."""
        return self.conn.guard.cutting

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], framing: bytes) -> bytes:
        """The status line and headers (the router's own, or taken from llhttp-parsed answers,
        never raw client bytes); `connection: close` once draining (clients reconnect to
        another replica) or when the connection will not be kept."""
        if self.conn.guard.draining:
            self.keep_alive = False
        line = STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status
        if not self.keep_alive:
            framing += b"connection: close\r\n"
        if not headers:
            return b"%b%b\r\n" % (line, framing)
        return b"%b%b\r\n%b\r\n" % (line, b"\r\n".join(map(b": ".join, headers)), framing)

    async def send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer: head and body in one write."""
        if self.responded:
            return
        self.responded = True
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected or self.response_started:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        head = self._head(status, headers, b"content-length: %d\r\n" % len(body))
        self.transport.write(head if self.head_only else head + body)
        self._complete()

    async def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The head of a streamed answer, now (the first event may be seconds away). HTTP/1.0
        knows no chunks: there the answer is kept and sent whole at its end."""
        if self.responded:
            return
        self.responded = True
        self.streaming = True
        if self.version == "1.0":
            self._buffer = []
            self._stream_head = (status, [*headers, _NO_CACHE])
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.chunked = not self.head_only and status not in (204, 304)
        self.response_started = True
        self.waiting_for_100_continue = False
        self.transport.write(
            self._head(status, headers, _CHUNKED_NO_CACHE if self.chunked else _NO_CACHE_LINE)
        )

    async def write_chunk(self, data: bytes) -> None:
        if not data:
            return
        if self._buffer is not None:
            self._buffer.append(data)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.chunked and not self.disconnected and not self.response_complete:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    async def end_stream(self) -> None:
        if not self.streaming:
            return
        self.streaming = False
        if self._buffer is not None:
            status, headers = self._stream_head
            self.responded = False
            await self.send(status, headers, b"".join(self._buffer))
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected or self.response_complete or not self.response_started:
            return
        if self.chunked:
            self.transport.write(b"0\r\n\r\n")
        self._complete()

    def _complete(self) -> None:
        self.response_complete = True
        if self._event is not None:
            self._event.set()
        if not self.keep_alive:
            self.transport.close()
        self.conn.on_response_complete()


_NO_CACHE = (b"cache-control", b"no-cache")
_NO_CACHE_LINE = b"cache-control: no-cache\r\n"
_CHUNKED_NO_CACHE = b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
_INTERNAL_ERROR = error_response(500, "internal router error", "internal_error")


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the router's bounds (module docstring), running the
    router's app directly for each request (an `Exchange`), not through ASGI."""

    # Set on the subclass `protocol_class` makes: what every connection shares, the app.
    guard: Guard
    handle: Callable[[Request, Exchange], Awaitable[None]]
    max_body: int
    cycle: Exchange | None  # type: ignore[assignment]  # the request being read
    pipeline: deque[Exchange]  # type: ignore[assignment]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.guard.limits
        self.max_head = limits.max_header_bytes
        self.max_url = limits.max_url_bytes
        self.header_timeout = limits.header_timeout_seconds
        self.body_timeout = limits.body_timeout_seconds
        self.keep_alive_timeout = limits.keep_alive_timeout_seconds
        self.max_pipelined = limits.max_pipelined_requests
        # HTTP/1.2 and later 1.x are served as 1.1 (RFC 9110 §2.5); other majors get 505.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True, lenient_version=True)
        self.deadline = _INF  # when the phase below times out (Guard._sweep)
        self.write_deadline = _INF  # the client has read nothing of its answer since
        self.kind = ""
        self.task: asyncio.Task[None] | None = None
        self.running: Exchange | None = None  # the exchange whose task runs
        self.refused = False
        self.stopped = False  # read nothing more (a bad request, or too many pipelined)
        self.in_message = False
        self.headers_done = False
        self.head_bytes = 0
        self.fields: dict[str, str] = {}  # the request's headers, for the app
        self.extra_hosts = False  # a Host field came twice
        self.fields_max = MAX_HEADER_FIELDS

    @property
    def busy(self) -> bool:
        return (self.task is not None and not self.task.done()) or bool(self.pipeline)

    # --- deadlines -------------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        self.kind = kind
        self.deadline = time.monotonic() + seconds

    def _responding(self) -> bool:
        return self.running is not None and not self.running.response_complete

    def _settle(self) -> None:
        """Between two events: arm the deadline that fits what is left on the connection."""
        if self.transport.is_closing():
            return
        running = self.running
        if running is not None and not running.response_complete:
            self.deadline = _INF
        elif self.in_message:
            if self.headers_done:
                self._arm("body", self.body_timeout)
            else:
                self._arm("head", self.header_timeout)
        else:
            now = time.monotonic()
            self.kind = "idle"
            self.deadline = now + self.keep_alive_timeout
            self.guard.idle[self] = now

    def _reading_its_body(self) -> bool:
        """Whether the running request is the one being read (its body is still arriving)."""
        return self.in_message and self.headers_done and self.running is self.cycle

    def _answer_in_progress(self) -> bool:
        """Whether an answer is being prepared or sent that a write now would cut into: an
        earlier request's (pipelining), or this one's once it has started."""
        running = self.running
        if running is None or running.response_complete:
            return False
        return running.response_started or not self._reading_its_body()

    def _answered(self) -> bool:
        """Whether the request being read has had its answer already (an early 413)."""
        running = self.running
        return running is not None and self._reading_its_body() and running.response_started

    def expired(self, now: float) -> None:
        if self.write_deadline <= now:
            log.info("closing a connection whose client reads nothing")
            self.transport.abort()
            return
        self.deadline = _INF
        if self.kind == "idle" or self._answered():
            self.close()
        elif self.kind == "head":
            self._reject(408, "the request headers did not arrive in time", "request_timeout")
        else:
            self._reject(408, "the request body did not arrive in time", "request_timeout")

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.refused = True
            transport.write(
                error_response(
                    503,
                    "the router is at its connection limit; retry shortly",
                    "too_many_connections",
                    b"retry-after: 1\r\n",
                )
            )
            # Half-close and drop what the client sends for a moment: closing outright with
            # its request unread would reset the connection and lose the 503.
            try:
                transport.write_eof()
            except (NotImplementedError, OSError, RuntimeError):
                transport.close()
                return
            self.loop.call_later(1.0, transport.abort)
            return
        self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        responding = self._responding()
        super().connection_lost(exc)
        self.deadline = self.write_deadline = _INF
        if responding and self.task is not None and not self.task.done():
            self.task.cancel()  # the client went away: stop its work, and the backend's

    def data_received(self, data: bytes) -> None:
        if self.refused or self.stopped:
            return
        if self.headers_done:
            self._feed(data)  # a body: bounded by the app (serve)
        elif len(data) <= self.max_head - self.head_bytes:
            self.head_bytes += len(data)  # the usual case: a whole small request
            self._feed(data)
        else:
            self._feed_sliced(data)

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except (_Reject, _StopParsing, httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self._parse_failed(e)

    def _feed_sliced(self, data: bytes) -> None:
        """Feed a piece at a time, so that the head never exceeds its limit in the parser
        (llhttp keeps a header value whole in memory until its end)."""
        view = memoryview(data)
        try:
            while view:
                if self.headers_done:
                    piece, view = view, view[:0]
                else:
                    allowance = self.max_head - self.head_bytes
                    if allowance <= 0:
                        raise _Reject(
                            431,
                            f"the request line and headers exceed {self.max_head} bytes",
                            "headers_too_large",
                        )
                    piece, view = view[:allowance], view[allowance:]
                    self.head_bytes += len(piece)
                self.parser.feed_data(piece)
                if self.stopped or self.transport.is_closing():
                    return
        except (_Reject, _StopParsing, httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self._parse_failed(e)

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

    def _reject(self, status: int, message: str, code: str) -> None:
        if self.transport.is_closing():
            return
        self.stopped = True
        if self._answer_in_progress():
            # Answers are going out: the refusal takes its turn after them (never written into
            # one), then the connection closes.
            self.stop_reading_after_answer()
            method = self.parser.get_method().decode("ascii") if self.headers_done else "GET"
            refusal = Exchange(self, method, b"", "1.1", False, {})
            type_ = "server_error" if status >= 500 else "invalid_request_error"
            refusal.refusal = (status, [_JSON], error_body(message, type_, code))
            self.pipeline.appendleft(refusal)
            self.guard.count(status)
            return
        if self._answered():
            self.close()
            return
        self.transport.write(error_response(status, message, code))
        self.guard.count(status)
        self.close()

    def stop_reading_after_answer(self) -> None:
        """Answer what was read already, then close; read nothing more."""
        self.stopped = True
        self.flow.pause_reading()
        last = self.pipeline[0] if self.pipeline else self.running
        if last is not None:
            last.keep_alive = False

    def close(self) -> None:
        self.guard.idle.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_deadline = time.monotonic() + self.keep_alive_timeout

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_deadline = _INF

    # --- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = {}
        self.fields_max = MAX_HEADER_FIELDS
        self.in_message = True
        self.headers_done = False
        self.extra_hosts = False
        self.guard.idle.pop(self, None)
        running = self.running
        if running is not None and not running.response_complete:
            self.deadline = _INF  # armed when the answer in progress is done
        else:
            self._arm("head", self.header_timeout)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url:
            raise _Reject(414, f"the request target exceeds {self.max_url} bytes", "url_too_long")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field: never merged into the headers (RFC 9110 §6.5.1)
        # The app's headers: names in lower case, as text (the checks below read them there).
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        fields = self.fields
        if key in fields:
            text = self._repeated(key, fields[key], text)
        elif len(fields) >= self.fields_max:
            self._too_many_fields()
        fields[key] = text

    def _too_many_fields(self) -> None:
        raise _Reject(431, f"more than {MAX_HEADER_FIELDS} header fields", "headers_too_large")

    def _repeated(self, key: str, first: str, again: str) -> str:
        """A field sent again: the value kept (the last one, as a dict keeps it), and what the
        checks need: a second Host (400), every transfer coding, any 100-continue. Each
        repeat takes one from the fields a new name may bring (the bound counts every field)."""
        self.fields_max -= 1
        if len(self.fields) > self.fields_max:
            self._too_many_fields()
        if key == "host":
            self.extra_hosts = True
        elif key == "transfer-encoding":
            return f"{first},{again}"
        elif key == "expect" and first.lower() == "100-continue":
            return first
        return again

    def on_headers_complete(self) -> None:
        self.headers_done = True
        parser = self.parser
        version = parser.get_http_version()
        url = self.url
        fields = self.fields
        host = fields.get("host")
        if not (
            version == "1.1"
            and host is not None
            and not self.extra_hosts
            and "transfer-encoding" not in fields
            and url.startswith(b"/")
            and _HOST.fullmatch(host)
        ):
            self._check_head(version, url)  # any other request: the rules one by one
        existing = self.cycle
        idle = existing is None or existing.response_complete
        if idle:
            self._arm("body", self.body_timeout)
        else:
            self.deadline = _INF
        # uvicorn's on_headers_complete, less what the router has no use for (the ASGI scope,
        # upgrades, limit_concurrency: the cap is Guard's).
        exchange = Exchange(
            self,
            parser.get_method().decode("ascii"),
            httptools.parse_url(url).path,
            "1.1" if version != "1.0" else "1.0",
            version != "1.0" and parser.should_keep_alive(),
            fields,
            "expect" in fields and fields["expect"].lower() == "100-continue",
        )
        self.cycle = exchange
        if idle:
            self._start(exchange)
        else:
            self.flow.pause_reading()  # pipelined: queued until the answers before it are out
            self.pipeline.appendleft(exchange)

    def _check_head(self, version: str, url: bytes) -> None:
        if not version.startswith("1."):
            raise _Reject(505, f"HTTP/{version} is not supported", "http_version_not_supported")
        if not url.startswith(b"/") and not url.startswith((b"http://", b"https://")):
            # asterisk-form (OPTIONS *) and authority-form (CONNECT) have no resource here
            raise _Reject(400, "the request target must be a path", "bad_http")
        host = self.fields.get("host")
        if version != "1.0" or host is not None:
            if host is None or self.extra_hosts:
                raise _Reject(400, "an HTTP/1.1 request needs exactly one Host header", "bad_host")
            if not _HOST.fullmatch(host):
                raise _Reject(400, "the Host header is not a valid host", "bad_host")
        te = self.fields.get("transfer-encoding")
        if te is not None:
            if version == "1.0":
                raise _Reject(400, "HTTP/1.0 has no Transfer-Encoding", "bad_http")
            if te.strip().lower() != "chunked":
                raise _Reject(
                    501, "only the chunked transfer coding is supported", "not_implemented"
                )

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return  # answered already (an early 413): read and dropped
        cycle.body = cycle.body + body if cycle.body else body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.more_body = False
            cycle.wake()
        self.in_message = False
        self.headers_done = False
        self.head_bytes = 0
        self._settle()
        if len(self.pipeline) >= self.max_pipelined:
            # Answer these, then close: a pipelining client re-sends the rest (RFC 9112 §9.3.2).
            self.pipeline[0].keep_alive = False
            self.stopped = True
            self.flow.pause_reading()
            raise _StopParsing()

    # --- running the app -----------------------------------------------------------------
    def _start(self, exchange: Exchange) -> None:
        self.task = exchange.task = self.loop.create_task(exchange.run())
        self.tasks.add(self.task)  # uvicorn's tasks: held until done (Exchange.run lets go)
        self.running = exchange
        self.guard.idle.pop(self, None)

    def on_response_complete(self) -> None:
        if self.transport.is_closing():
            return
        if self.pipeline:
            self._start(self.pipeline.pop())
        elif not self.stopped:
            self.flow.resume_reading()
        self._settle()


def protocol_class(guard: Guard, app: RouterAsgi) -> type[GuardedHttpTools]:
    attributes = {"guard": guard, "handle": staticmethod(app.handler), "max_body": app.max_body}
    return cast(type[GuardedHttpTools], type("RouterHttpProtocol", (GuardedHttpTools,), attributes))


async def run_listener(app: RouterAsgi, guard: Guard, host: str, port: int) -> asyncio.Server:
    """Listen on host:port with uvicorn's protocol; the caller closes it (the drain)."""
    config = Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=protocol_class(guard, app),
        ws="none",
        lifespan="off",
        interface="asgi3",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        log_config=None,
    )
    config.load()
    state = ServerState()
    cls = cast(Any, config.http_protocol_class)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(config=config, server_state=state, app_state={}),
        host,
        port,
        reuse_address=True,
        backlog=1024,
    )
    guard.start()
    return server
