"""Small loopback servers for the federation tests: a fake llama-server (health, and a POST that
can sleep) and a fake peer router (a /readyz with GPU capacity and a POST that hangs, resets or
answers 500), for the faults a real router cannot be made to show on cue."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPLY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "stub",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"}}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class StubServer:
    """A threaded HTTP server on a free loopback port; `mode` picks what a POST gets:
    "ok", "sleep:<s>" (answers after s seconds), "hold" (answers once `release` is set),
    "stream-break" (two SSE events, then the connection dies), "hang" (never answers),
    "reset" (closes the
    connection without a byte), "500". `ready` says what /readyz and /health answer."""

    def __init__(self, model: str, *, gpu_slots: int = 4, mode: str = "ok") -> None:
        self.model, self.gpu_slots, self.mode = model, gpu_slots, mode
        self.ready = True
        self.hits = 0
        self.headers: list[dict[str, str]] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/readyz":
                    if not stub.ready:
                        self._send(500, b'{"status":"down"}')
                        return
                    body = {
                        "status": "ready",
                        "models": {stub.model: "ready"},
                        "tiers": {
                            "gpu": [
                                {
                                    "model": stub.model,
                                    "slots": stub.gpu_slots,
                                    "free": stub.gpu_slots,
                                }
                            ]
                        },
                    }
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(200 if stub.ready else 503, b'{"status":"ok"}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                stub.hits += 1
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                mode = stub.mode
                if mode == "hang":
                    stub.release.wait(60)
                    self.close_connection = True
                    return
                if mode == "reset":
                    self.close_connection = True
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                    return
                if mode == "stream-break":  # two events, then the connection dies
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("x-llm-tier", "gpu")
                    self.send_header("x-llm-backend", "flaky/gpu")
                    self.end_headers()
                    for i in range(2):
                        chunk = {
                            "object": "chat.completion.chunk",
                            "model": stub.model,
                            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
                        }
                        data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "500":
                    self._send(500, b'{"error":{"message":"boom","type":"server_error"}}')
                    return
                if mode == "hold":
                    stub.release.wait(60)
                if mode.startswith("sleep:"):
                    time.sleep(float(mode.split(":")[1]))
                self._send(200, json.dumps(REPLY | {"model": stub.model}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics(url: str) -> Samples:
    text = httpx.get(url + "/metrics", timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
