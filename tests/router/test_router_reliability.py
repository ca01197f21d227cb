"""Failure handling that a healthy llama-server cannot be made to show on cue: a backend that
answers 500, one that breaks a stream in the middle, one that is slow to answer or slow to
stream. The backends here are small loopback HTTP servers speaking llama-server's OpenAI API
shapes; the router is the real `llmctl router serve` process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.router.stubs import REPLY, LoopbackServer, StubHandler, sse_event
from tests.support.router import RouterProcess, router_config

pytestmark = pytest.mark.e2e


class Stub(LoopbackServer):
    """One fake backend. `always_500` makes every POST fail before any body byte (with
    `fail_status`, 500 unless changed)."""

    def __init__(self, always_500: bool = False) -> None:
        self.always_500 = always_500
        self.fail_status = 500
        self.hits = 0
        self.finished = 0  # POSTs whose handler has returned (answered, failed or cut off)
        self.client_gone = threading.Event()
        stub = self

        class Handler(StubHandler):
            def do_GET(self) -> None:
                self._send(200, b'{"status":"ok"}')

            def do_POST(self) -> None:
                try:
                    self._post()
                finally:
                    stub.finished += 1

            def _post(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stub.hits += 1
                if stub.always_500:
                    self._send(
                        stub.fail_status, b'{"error":{"message":"boom","type":"server_error"}}'
                    )
                    return
                command = body["messages"][-1]["content"]
                if command.startswith("sleep:"):
                    time.sleep(float(command.split(":")[1]))
                    self._send(200, json.dumps(REPLY).encode())
                elif command in ("stream-break", "stream-slow"):
                    self._start_events()
                    count = 2 if command == "stream-break" else 100
                    try:
                        for i in range(count):
                            self._send_event(sse_event(f"tok{i} "))
                            if command == "stream-slow":
                                time.sleep(0.05)
                    except OSError:
                        stub.client_gone.set()
                        return
                    # stream-break: the backend dies without finishing the chunked body.
                    self._die()
                else:
                    self._send(200, json.dumps(REPLY).encode())

        self._serve(Handler)


def wait_for(predicate: Any, timeout: float) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RouterProcess, dict[str, Stub]]]:
    stubs = {"broken": Stub(always_500=True), "good": Stub(), "single": Stub()}
    backends = [
        # "broken" is cheaper, so it ranks first and every request tries it before "good".
        {
            "name": "aws/broken",
            "url": stubs["broken"].url,
            "tier": "cpu",
            "cloud": "aws",
            "model": "m-retry",
            "slots": 4,
            "costWeight": 0.5,
        },
        {
            "name": "gcp/good",
            "url": stubs["good"].url,
            "tier": "cpu",
            "cloud": "gcp",
            "model": "m-retry",
            "slots": 4,
            "costWeight": 1.0,
        },
        {
            "name": "aws/single",
            "url": stubs["single"].url,
            "tier": "cpu",
            "cloud": "aws",
            "model": "m-single",
            "slots": 1,
        },
    ]
    models = [
        {"name": "m-retry", "parameters": 1_000_000_000},
        {"name": "m-single", "parameters": 1_000_000_000},
    ]
    config = router_config(
        backends,
        models,
        "m-retry",
        limits={
            "queueTimeoutSeconds": 0.3,
            "firstByteTimeoutSeconds": 1.0,
            "idleTimeoutSeconds": 2.0,
        },
    )
    router = RouterProcess(config, tmp_path_factory.mktemp("router-reliability")).start()
    try:
        yield router, stubs
    finally:
        router.stop()
        for stub in stubs.values():
            stub.close()


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def post(router: RouterProcess, model: str, text: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        router.url + "/v1/chat/completions", timeout=30, json=chat(model, text, **extra)
    )


def stream(router: RouterProcess, text: str) -> AbstractContextManager[httpx.Response]:
    """A streamed chat request to m-single, whose backend reads `text` as its command."""
    return httpx.stream(
        "POST",
        router.url + "/v1/chat/completions",
        timeout=30,
        json=chat("m-single", text, stream=True),
    )


def test_503_before_first_byte_is_retried_once_on_another_backend(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    router, stubs = setup
    stubs["broken"].fail_status = 503  # "not taken": safe to send elsewhere
    try:
        before_broken, before_good = stubs["broken"].hits, stubs["good"].hits
        response = post(router, "m-retry", "hello")
    finally:
        stubs["broken"].fail_status = 500
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-backend"] == "gcp/good"
    assert (stubs["broken"].hits - before_broken, stubs["good"].hits - before_good) == (1, 1)


def test_500_is_the_backends_verdict_and_never_retried(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    """Review finding 8: a 500 was retried on a second backend (one client mistake, two
    backend requests; six with the openai client's retries)."""
    router, stubs = setup
    before_broken, before_good = stubs["broken"].hits, stubs["good"].hits
    response = post(router, "m-retry", "hello")
    assert response.status_code == 500
    assert (stubs["broken"].hits - before_broken, stubs["good"].hits - before_good) == (1, 0)


def test_5xx_with_no_other_backend_reaches_the_client(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    router, stubs = setup
    stubs["single"].always_500 = True
    try:
        response = post(router, "m-single", "hello")
    finally:
        stubs["single"].always_500 = False
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "boom"


def test_stream_broken_midway_ends_with_an_error_event_and_no_retry(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    router, stubs = setup
    before = stubs["single"].hits
    with stream(router, "stream-break") as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    events = [e for e in text.split("\n\n") if e.strip()]
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:2]] == [
        "tok0 ",
        "tok1 ",
    ]
    assert json.loads(events[-1][6:])["error"]["code"] == "stream_broken"
    assert "[DONE]" not in text
    assert stubs["single"].hits - before == 1  # never retried once streaming began


def test_waiting_past_the_queue_deadline_is_429(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    router, stubs = setup
    before = stubs["single"].hits
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, router, "m-single", "sleep:0.8")
        # The slow one holds the only slot once it has reached the backend.
        assert wait_for(lambda: stubs["single"].hits == before + 1, 10)
        queued = pool.submit(post, router, "m-single", "hello")
        responses = [slow.result(), queued.result()]
    assert responses[0].status_code == 200
    assert responses[1].status_code == 429
    assert int(responses[1].headers["retry-after"]) >= 1
    assert responses[1].json()["error"]["code"] == "queue_timeout"


def test_first_byte_timeout_is_504(setup: tuple[RouterProcess, dict[str, Stub]]) -> None:
    router, stubs = setup
    started = time.monotonic()
    response = post(router, "m-single", "sleep:2.5")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "backend_timeout"
    assert time.monotonic() - started < 2.0
    # The stub is shared by the module: the next test starts once it has finished this one.
    single = stubs["single"]
    assert wait_for(lambda: single.finished == single.hits, 10)


def test_client_disconnect_cancels_the_backend_request(
    setup: tuple[RouterProcess, dict[str, Stub]],
) -> None:
    router, stubs = setup
    stubs["single"].client_gone.clear()
    with stream(router, "stream-slow") as response:
        for _ in response.iter_bytes():
            break  # the first chunk arrived: hang up
    # The stub streams for 5 s; it sees its connection closed long before that.
    assert stubs["single"].client_gone.wait(3.0)
    # and the slot was given back: the next request is served at once.
    assert post(router, "m-single", "hello").status_code == 200


def test_router_config_errors_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.router import SRC

    bad = tmp_path / "router.yaml"
    bad.write_text("cloud: aws\nmodels: []\nbackends: []\npolicy: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "llmctl", "router", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 2
    assert "policy.fallbackModel" in result.stderr
    assert "Traceback" not in result.stderr
