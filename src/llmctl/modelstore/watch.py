"""The llama pod's stage watcher (issue 30): a native sidecar in the router image that serves
the pod's start-up stages to Prometheus and logs the two it times itself.

It runs as a second container beside llama-server, started with it once `fetch-model` has
ended (not before it: nothing waits for the watcher). It reads the stages the fetcher wrote to
the model volume (`MODEL_FETCH_METRICS_FILE`), then polls llama-server's `/health` on the pod's
loopback until it answers 200, and adds:

- `load`: from the fetch's end (the record's modification time, on the node's clock like this
  process's) to that first 200: llama-server's container start and its model load;
- `first_ready`: `fetch` + `load`, the pod's own part of its cold start, from the fetcher's
  start to a server that answers (the kubelet's startup probe sees it within its 1 s period).

Both are logged in the fetcher's line format (`llmctl-stage stage=...`) and served with the
fetcher's stages on `/metrics` (`STAGES_PORT`, default 9464). It needs no Kubernetes API (no
RBAC) and nothing beyond the standard library; run as `python3 -m llmctl.modelstore.watch`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llmctl.modelstore import stages

DEFAULT_PORT = 9464
DEFAULT_SERVER_URL = "http://127.0.0.1:8080"
POLL_SECONDS = 0.25
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class WatchSettings:
    record: Path | None
    server_url: str = DEFAULT_SERVER_URL
    host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the pod's IP
    port: int = DEFAULT_PORT
    poll_seconds: float = POLL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WatchSettings:
        record = env.get("MODEL_FETCH_METRICS_FILE")
        return cls(
            record=Path(record) if record else None,
            server_url=env.get("LLAMA_SERVER_URL", DEFAULT_SERVER_URL).rstrip("/"),
            port=int(env.get("STAGES_PORT", DEFAULT_PORT)),
        )


class StageBoard:
    """The stages known so far and their labels, read by the HTTP handler's threads."""

    def __init__(self, known: list[stages.Stage], labels: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        self._stages = list(known)
        self.labels = dict(labels)

    def add(self, stage: stages.Stage) -> None:
        with self._lock:
            self._stages.append(stage)

    def snapshot(self) -> list[stages.Stage]:
        with self._lock:
            return list(self._stages)

    def metrics(self) -> str:
        return stages.metrics_text(self.snapshot(), self.labels)


def serve(board: StageBoard, host: str, port: int) -> ThreadingHTTPServer:
    """/metrics in Prometheus' text format, on a thread of its own."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = board.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # one line per scrape would drown the stage lines

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stages-http", daemon=True).start()
    return server


def health_status(url: str, timeout: float = 2.0) -> int | None:
    """The status llama-server's /health answers (503 while loading), None before it listens."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_until_healthy(
    url: str,
    poll_seconds: float,
    stop: threading.Event,
    status: Callable[[str], int | None] = health_status,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[float | None, float | None]:
    """Poll until /health answers 200: (when it first answered at all, when it answered 200),
    as `clock()` moments; (.., None) if `stop` was set first."""
    answered: float | None = None
    while not stop.is_set():
        found = status(url)
        now = clock()
        if found is not None and answered is None:
            answered = now
        if found == 200:
            return answered, now
        stop.wait(poll_seconds)
    return answered, None


def run(
    settings: WatchSettings,
    log: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    status: Callable[[str], int | None] = health_status,
) -> StageBoard:
    """Serve the stages until `stop` is set (SIGTERM, in the pod); returns the board."""
    stop = stop or threading.Event()
    # The stages count from the fetch's end when the record says when that was (its mtime),
    # else from this start (no record: a model fetched by something else).
    started = time.monotonic()
    try:
        fetched_at = settings.record.stat().st_mtime if settings.record else None
    except OSError:
        fetched_at = None
    if fetched_at is not None:
        started -= max(0.0, time.time() - fetched_at)
    known, labels = stages.read_metrics_record(settings.record) if settings.record else ([], {})
    board = StageBoard(known, labels)
    server = serve(board, settings.host, settings.port)
    try:
        answered, healthy = wait_until_healthy(
            settings.server_url, settings.poll_seconds, stop, status
        )
        if healthy is not None:
            fields: dict[str, str | int | float] = {"server": settings.server_url}
            if answered is not None:
                fields["server_answered_after"] = round(answered - started, 3)
            load = stages.Stage("load", healthy - started, fields)
            board.add(load)
            log(stages.stage_line(load))
            fetch = next((s for s in known if s.name == "fetch"), None)
            first = stages.Stage(
                "first_ready",
                load.seconds + (fetch.seconds if fetch else 0.0),
                {"from": "fetch_start" if fetch else "fetch_end"},
            )
            board.add(first)
            log(stages.stage_line(first))
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return board


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(WatchSettings.from_env(os.environ), log=lambda line: print(line, flush=True), stop=stop)


if __name__ == "__main__":
    main()
