"""Serving the router on uvicorn's HTTP/1.1 protocol (httptools + uvloop), with every bound on
clients the router had on its own server (issue 19) kept (issue 25).

uvicorn parses requests (llhttp), runs one ASGI task per request, answers pipelined requests in
order with reading paused, waits for the client to read (flow control), sends `100 Continue`
and drops the body of HEAD answers. What it has no setting for is added here, in a subclass of
its protocol, `GuardedHttpTools`, and one `Guard` (router/guard.py) shared by all connections:

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
import urllib.parse
from http import HTTPStatus
from typing import Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from llmctl.router.asgi import RouterAsgi, error_body
from llmctl.router.guard import Guard

log = logging.getLogger("llmctl.router")

# Header fields in one request (hyper's default; nginx refuses 1,000 small ones too).
MAX_HEADER_FIELDS = 100
# RFC 9110 §7.2: uri-host [":" port]; a reg-name, an IPv4 address or a bracketed IP literal.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
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


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, writing an answer's head together with its first body
    part: one send on the socket for a whole answer instead of two (on loopback a send costs
    about as much as the rest of the router's work for a request)."""

    _head: bytes = b""

    def whole_body(self) -> bytes | None:
        """The request's body if it has all arrived (asgi.RouterAsgi's fast path: what
        `receive` returns then, without the message), else None."""
        if self.more_body or self.disconnected or self.waiting_for_100_continue:
            return None
        body = bytes(self.body)
        self.body = bytearray()
        return body

    def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """A whole answer at once (asgi.Reply.send's fast path): what `send` does for a start
        message and one body message, without the two messages. False: use `send`."""
        if self.flow.write_paused:
            return False
        if self.disconnected or self.response_started:
            return True
        self.response_started = True
        self.waiting_for_100_continue = False
        head = self._start(status, headers)
        self.transport.write(head if self.scope["method"] == "HEAD" else head + body)
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.response_started = True
            self.waiting_for_100_continue = False
            self._head = self._start(message["status"], message.get("headers", ()))
            return
        if self.response_complete:
            raise RuntimeError(f"{message['type']} after the response was complete")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        head, self._head = self._head, b""
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = head
        elif self.chunked_encoding:
            data = head + (b"%x\r\n%b\r\n" % (len(body), body) if body else b"")
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            data = head + body if head else body
        if data:
            self.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _start(self, status: int, headers: Any) -> bytes:
        """The status line and headers (as uvicorn writes them: the app's headers are the
        router's own or come from llhttp-parsed responses, never raw client bytes)."""
        content = [STATUS_LINE[status]]
        closing = False
        for name, value in headers:
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value)
                self.chunked_encoding = False
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                closing = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the router's bounds (module docstring)."""

    guard: Guard  # set on the subclass `protocol_class` makes

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
        # HTTP/1.2 and later 1.x are served as 1.1 (RFC 9110 §2.5); other majors get 505.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True, lenient_version=True)
        self.deadline = _INF  # when the phase below times out (Guard._sweep)
        self.write_deadline = _INF  # the client has read nothing of its answer since
        self.kind = ""
        self.task: asyncio.Task[None] | None = None
        self.running: RequestResponseCycle | None = None  # the cycle whose task runs
        self.refused = False
        self.stopped = False  # read nothing more (a bad request, or too many pipelined)
        self.in_message = False
        self.headers_done = False
        self.head_bytes = 0
        self.hosts = 0
        self.host = b""
        self.te: bytes | None = None

    @property
    def busy(self) -> bool:
        return (self.task is not None and not self.task.done()) or bool(self.pipeline)

    # --- deadlines -------------------------------------------------------------------------
    def _arm(self, kind: str, seconds: float) -> None:
        self.kind = kind
        self.deadline = time.monotonic() + seconds

    def _disarm(self) -> None:
        self.deadline = _INF

    def _responding(self) -> bool:
        return self.running is not None and not self.running.response_complete

    def _settle(self) -> None:
        """Between two events: arm the deadline that fits what is left on the connection."""
        if self.transport.is_closing():
            return
        limits = self.guard.limits
        if self._responding():
            self._disarm()
        elif self.in_message:
            if self.headers_done:
                self._arm("body", limits.body_timeout_seconds)
            else:
                self._arm("head", limits.header_timeout_seconds)
        else:
            self._arm("idle", limits.keep_alive_timeout_seconds)
            self.guard.idle[self] = time.monotonic()

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
        self._disarm()
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
            self._feed(data)  # a body: bounded by the app (asgi.py)
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
            if self.scope is not None:
                self.scope.setdefault("method", "GET")
                cycle = RequestResponseCycle(
                    scope=self.scope,
                    transport=self.transport,
                    flow=self.flow,
                    logger=self.logger,
                    access_logger=self.access_logger,
                    access_log=False,
                    default_headers=[],
                    message_event=asyncio.Event(),
                    expect_100_continue=False,
                    keep_alive=False,
                    on_response=self.on_response_complete,
                )
                self.pipeline.appendleft((cycle, _refusal_app(status, message, code)))
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
        last = self.pipeline[0][0] if self.pipeline else self.running
        if last is not None:
            last.keep_alive = False

    def close(self) -> None:
        self.guard.idle.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_deadline = time.monotonic() + self.guard.limits.keep_alive_timeout_seconds

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_deadline = _INF

    # --- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's on_message_begin, less the lifespan state the router does not use.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
        }
        self.in_message = True
        self.headers_done = False
        self.hosts = 0
        self.te = None
        self.guard.idle.pop(self, None)
        if self._responding():
            self._disarm()  # armed when the answer in progress is done
        else:
            self._arm("head", self.guard.limits.header_timeout_seconds)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url:
            raise _Reject(414, f"the request target exceeds {self.max_url} bytes", "url_too_long")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field: never merged into the headers (RFC 9110 §6.5.1)
        headers = self.headers
        if len(headers) >= MAX_HEADER_FIELDS:
            raise _Reject(
                431, f"more than {MAX_HEADER_FIELDS} header fields", "headers_too_large"
            )
        name = name.lower()
        if name == b"host":
            self.hosts += 1
            self.host = value
        elif name == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        version = self.parser.get_http_version()
        if not version.startswith("1."):
            raise _Reject(505, f"HTTP/{version} is not supported", "http_version_not_supported")
        url = self.url
        if not url.startswith(b"/") and not url.startswith((b"http://", b"https://")):
            # asterisk-form (OPTIONS *) and authority-form (CONNECT) have no resource here
            raise _Reject(400, "the request target must be a path", "bad_http")
        if version != "1.0" or self.hosts:
            if self.hosts != 1:
                raise _Reject(400, "an HTTP/1.1 request needs exactly one Host header", "bad_host")
            if not _HOST.fullmatch(self.host):
                raise _Reject(400, "the Host header is not a valid host", "bad_host")
        if self.te is not None:
            if version == "1.0":
                raise _Reject(400, "HTTP/1.0 has no Transfer-Encoding", "bad_http")
            if self.te.strip().lower() != b"chunked":
                raise _Reject(
                    501, "only the chunked transfer coding is supported", "not_implemented"
                )
        if self._responding():
            self._disarm()
        else:
            self._arm("body", self.guard.limits.body_timeout_seconds)
        # uvicorn's on_headers_complete, less what the router has no use for (upgrades,
        # limit_concurrency: the cap is Guard's), with the cycle that writes an answer's head
        # and body in one go.
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        scope["path"] = urllib.parse.unquote(path) if "%" in path else path
        scope["raw_path"] = raw_path
        scope["query_string"] = parsed.query or b""
        existing = self.cycle
        self.cycle = OneWriteCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:
            self.flow.pause_reading()  # pipelined: queued until the answers before it are out
            self.pipeline.appendleft((self.cycle, self.app))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_message = False
        self.headers_done = False
        self.head_bytes = 0
        self._settle()
        if len(self.pipeline) >= self.guard.limits.max_pipelined_requests:
            # Answer these, then close: a pipelining client re-sends the rest (RFC 9112 §9.3.2).
            self.pipeline[0][0].keep_alive = False
            self.stopped = True
            self.flow.pause_reading()
            raise _StopParsing()

    # --- running the app -----------------------------------------------------------------
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self.task = task
        self.running = cycle
        self.guard.idle.pop(self, None)

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self.stopped:
            self.flow.resume_reading()
        self._settle()


def _refusal_app(status: int, message: str, code: str) -> Any:
    """An ASGI app that answers one refusal: queued behind pipelined answers in progress."""
    response = error_response(status, message, code)
    head, _, body = response.partition(b"\r\n\r\n")
    headers = [
        tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:] if b": " in line
    ]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


def protocol_class(guard: Guard) -> type[GuardedHttpTools]:
    return cast(
        type[GuardedHttpTools], type("RouterHttpProtocol", (GuardedHttpTools,), {"guard": guard})
    )


async def run_listener(
    app: RouterAsgi, guard: Guard, host: str, port: int
) -> asyncio.Server:
    """Listen on host:port with uvicorn's protocol; the caller closes it (the drain)."""
    config = Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=protocol_class(guard),
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
