"""A backend that comes up while the router is in its health-check backoff (issue 30): a tier
scaled to zero, then its pod started. The router used to wait out the backoff (the first
interval, then doubling up to `maxBackoffSeconds`) before it looked again, so the first token
came seconds to a minute after the server was healthy. A request that wants the tier now makes
the router check it, at most once a second."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer, free_port
from tests.support.router import CPU_MODEL, RouterProcess, router_config, two_models

pytestmark = pytest.mark.e2e

# The first backoff step: far longer than a tiny model takes to load, so the old router would
# not look again until well after the server is healthy.
INTERVAL_S = 30.0
# What the fix promises: the wanted backend is checked at most once a second, on demand; the
# rest is a request's round trip on a loaded machine.
SERVED_WITHIN_S = 3.0


def test_a_backend_that_becomes_healthy_is_used_within_seconds_not_after_its_backoff(
    tmp_path: Path,
) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf")
    port = free_port()
    backends = [
        {
            "name": "aws/cpu",
            "url": f"http://127.0.0.1:{port}",
            "tier": "cpu",
            "cloud": "aws",
            "model": CPU_MODEL,
            "slots": 2,
        }
    ]
    config = router_config(backends, two_models(), CPU_MODEL)
    config["healthCheck"] = {"intervalSeconds": INTERVAL_S, "maxBackoffSeconds": 60.0}
    body = {"model": CPU_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with (
        RouterProcess(config, tmp_path) as router,
        httpx.Client(base_url=router.url, timeout=30) as client,
    ):
        refused = client.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503, refused.text  # nothing listens on the port yet
        # The pod starts: the router has failed its checks and backs off for INTERVAL_S.
        with LlamaServer(gguf, CPU_MODEL, tmp_path, port=port) as server:
            healthy_at = time.monotonic()  # start() returns once /health answered 200
            deadline = healthy_at + INTERVAL_S - 5
            while True:
                response = client.post("/v1/chat/completions", json=body)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            served_after = time.monotonic() - healthy_at
            assert response.status_code == 200, (response.status_code, response.text)
            assert response.headers["x-llm-tier"] == "cpu"
            assert served_after < SERVED_WITHIN_S, (
                f"first answer {served_after:.1f} s after {server.url} was healthy"
            )
