"""Small loopback servers for the federation tests: a fake llama-server (health, and a POST that
can sleep) and a fake peer router (a /readyz with GPU capacity and a POST that hangs, resets or
answers 500), for the faults a real router cannot be made to show on cue."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.router.stubs import REPLY, LoopbackServer, StubHandler, sse_event


class StubServer(LoopbackServer):
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

        class Handler(StubHandler):
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
                    self._start_events({"x-llm-tier": "gpu", "x-llm-backend": "flaky/gpu"})
                    for i in range(2):
                        self._send_event(sse_event(f"tok{i} ", model=stub.model))
                    self._die()
                    return
                if mode == "500":
                    self._send(500, b'{"error":{"message":"boom","type":"server_error"}}')
                    return
                if mode == "hold":
                    stub.release.wait(60)
                if mode.startswith("sleep:"):
                    time.sleep(float(mode.split(":")[1]))
                self._send(200, json.dumps(REPLY | {"model": stub.model}).encode())

        self._serve(Handler)

    def close(self) -> None:
        self.release.set()
        super().close()


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
