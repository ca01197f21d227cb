"""A local static file server (on 127.0.0.1 unless told otherwise) that speaks HTTP Range (206 +
Content-Range), and can be told to ignore Range, to redirect, to answer 404, or to stall (headers
and a first KiB, then nothing), and records every request it serves."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    files: dict[str, Path]
    honour_range: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    body_bytes_sent: int = 0
    base_url: str = ""
    # The first `stall` GETs send their headers and 1 KiB, then hold the connection open with
    # nothing more until `released` is set (a server or network that stops moving bytes).
    stall: int = 0
    stalled: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    # The headers named in `record_headers`, one dict per request (absent ones left out).
    record_headers: tuple[str, ...] = ()
    headers: list[dict[str, str]] = field(default_factory=list)


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib's name
            served.requests.append((self.path, self.headers.get("Range")))
            served.headers.append(
                {k: v for k in served.record_headers if (v := self.headers.get(k)) is not None}
            )
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + self.path.removeprefix("/redirect/"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = served.files.get(self.path.lstrip("/"))
            if path is None:
                self.send_error(404, "Not Found")
                return
            size = path.stat().st_size
            start, end = 0, size - 1
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            partial = served.honour_range and match is not None
            if partial:
                assert match is not None
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            with path.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                if served.stalled < served.stall:
                    served.stalled += 1
                    try:
                        self.wfile.write(f.read(min(left, 1024)))
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    served.released.wait(120)
                    return
                try:
                    while left > 0:
                        chunk = f.read(min(left, 64 * 1024))
                        self.wfile.write(chunk)
                        served.body_bytes_sent += len(chunk)
                        left -= len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client read what it needed and hung up

    return Handler


@contextmanager
def range_server(
    files: dict[str, Path],
    honour_range: bool = True,
    host: str = "127.0.0.1",
    record_headers: tuple[str, ...] = (),
) -> Iterator[Served]:
    """Serve `files` on `host` (loopback; a real node's bridge address for its pods)."""
    served = Served(files=files, honour_range=honour_range, record_headers=record_headers)
    server = ThreadingHTTPServer((host, 0), _handler(served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    served.base_url = f"http://{host}:{server.server_address[1]}"
    try:
        yield served
    finally:
        served.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
