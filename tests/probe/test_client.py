"""The test-inference client's own parts: URL forms, percentiles, the concurrency bound, and
streams that break (sent by a small loopback server, since a healthy router rarely does)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from llmctl.errors import ConfigError
from llmctl.probe import client
from llmctl.probe.client import Target
from tests.support.http_fake import serve_handler


@pytest.mark.parametrize(
    "given",
    ["http://h:8080", "http://h:8080/", "http://h:8080/v1", "http://h:8080/v1/", " http://h:8080 "],
)
def test_url_forms(given: str) -> None:
    assert client.normalize_url(given) == "http://h:8080"


def test_url_under_a_path_prefix_keeps_it() -> None:
    assert client.normalize_url("https://gw.example.com/llm/v1") == "https://gw.example.com/llm"


@pytest.mark.parametrize("bad", ["ftp://h", "h:8080", "http://", ""])
def test_bad_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        client.normalize_url(bad)


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert client.percentile(values, 50) == pytest.approx(50.5)
    assert client.percentile(values, 95) == pytest.approx(95.05)
    assert client.percentile(values, 99) == pytest.approx(99.01)
    assert client.percentile([3.0], 99) == 3.0
    assert client.percentile([], 50) is None


def test_concurrency_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def fake_send(target: Target) -> client.Result:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return client.Result(status=200, latency_s=0.02, tier="cpu", output_tokens=3)

    monkeypatch.setattr(client, "send_one", fake_send)
    seen: list[client.Result] = []
    outcome = client.run(
        Target("http://x", "m", "p", 4), requests=30, concurrency=3, on_result=seen.append
    )
    assert len(outcome.results) == 30 and len(seen) == 30
    assert peak[0] == 3


class Scripted(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions with the body of the path's script."""

    protocol_version = "HTTP/1.1"
    scripts: dict[str, bytes] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = self.scripts[self.path.split("/v1/")[0].strip("/")]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("x-llm-tier", "gpu")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
Scripted.scripts = {
    "broken": CHUNK + b'data: {"error":{"message":"backend reset","type":"server_error",'
    b'"code":"stream_broken"}}\n\n',
    "cut": CHUNK + CHUNK,
    "counted": CHUNK + CHUNK + CHUNK + b"data: [DONE]\n\n",
    "garbage": b"data: {not json\n\n",
}


@pytest.fixture(scope="module")
def scripted() -> Iterator[str]:
    with serve_handler(Scripted) as url:
        yield url


def send(url: str) -> client.Result:
    return client.send_one(Target(url, "m", "p", 8, timeout_s=10))


def test_error_event_mid_stream_is_stream_broken(scripted: str) -> None:
    result = send(scripted + "/broken")
    assert result.failure is not None and result.failure.kind == "stream_broken"
    assert "backend reset" in result.failure.message
    assert result.reply == "Hi" and result.ttft_s is not None


def test_stream_without_done_is_incomplete(scripted: str) -> None:
    result = send(scripted + "/cut")
    assert result.failure is not None and result.failure.kind == "stream_incomplete"


def test_without_usage_tokens_are_counted_chunks(scripted: str) -> None:
    result = send(scripted + "/counted")
    assert result.ok and result.tier == "gpu"
    assert result.output_tokens == 3 and result.tokens_counted
    assert result.reply == "HiHiHi"


def test_non_json_event_is_a_bad_response(scripted: str) -> None:
    result = send(scripted + "/garbage")
    assert result.failure is not None and result.failure.kind == "bad_response"
    found = client.problems(client.Run(Target(scripted, "m", "p", 8), 1, 1, 0.1, [result]), None)
    assert found[0].kind == "bad_response" and "not JSON" in found[0].message
