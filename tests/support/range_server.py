"""A local static file server (on 127.0.0.1 unless told otherwise) that speaks HTTP Range (206 +
Content-Range), and can be told to ignore Range, to redirect, or to answer 404, and records every
request it serves."""

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


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib's name
            served.requests.append((self.path, self.headers.get("Range")))
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
    files: dict[str, Path], honour_range: bool = True, host: str = "127.0.0.1"
) -> Iterator[Served]:
    """Serve `files` on `host` (loopback; a real node's bridge address for its pods)."""
    served = Served(files=files, honour_range=honour_range)
    server = ThreadingHTTPServer((host, 0), _handler(served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    served.base_url = f"http://{host}:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
