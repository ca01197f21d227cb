"""A tiny threaded HTTP server on 127.0.0.1 for the cloud and Kubernetes stand-ins.

Each stand-in is a `route(request) -> Response` function; the server records every request so
tests can assert on what the real SDK clients sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Sent as is instead of `body` as JSON (a pod log is text/plain).
    raw: bytes | None = None
    content_type: str = "application/json"
    # Takes over the connection instead of a plain answer (a WebSocket upgrade): called with
    # the request handler, whose rfile/wfile are the client's socket.
    hijack: Callable[[BaseHTTPRequestHandler], None] | None = None


Route = Callable[[Request], Response]


@dataclass
class PoolApi:
    """What the GKE and AKS stand-ins both keep: the clusters that exist (at first the one
    llmctl's defaults name, `CLUSTER`), each node pool as the API returns it (by pool name), the
    long-running operations (by id), the permission the caller is refused (None: all granted)
    and the counter operation ids and eTags come from."""

    CLUSTER: ClassVar[str]

    clusters: set[str] = field(default_factory=set)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Any] = field(default_factory=dict)
    forbidden: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.clusters = self.clusters or {self.CLUSTER}


@dataclass
class FakeServer:
    url: str
    requests: list[Request]


@contextmanager
def serve(route: Route) -> Iterator[FakeServer]:
    requests: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            request = Request(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            requests.append(request)
            response = route(request)
            if response.hijack is not None:
                self.close_connection = True
                response.hijack(self)
                return
            if response.raw is not None:
                payload = response.raw
            else:
                payload = b"" if response.body is None else json.dumps(response.body).encode()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return None

    with serve_handler(Handler) as url:
        yield FakeServer(url, requests)


@contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded server on a free loopback port answering with `handler`; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
