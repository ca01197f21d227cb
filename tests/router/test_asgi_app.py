"""The router as a plain ASGI app (`llmctl.router.asgi:app_from_env`) under stock uvicorn.

`llmctl router serve` answers on uvicorn's protocol directly (router/server.py); the ASGI app is
the same router for any other ASGI server, the one benchmarks/router_overhead.py runs under
granian to compare servers. Nothing else runs it, so this keeps it working: a completion,
a stream, an OpenAI-style error, and the lifespan that starts the health checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer
from tests.support.router import CPU_MODEL, SRC, RouterProcess, router_config, two_models
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


class AsgiRouter(RouterProcess):
    """The router's ASGI app under `uvicorn --factory`, with nothing of router/server.py."""

    def start(self, timeout: float = 90.0) -> AsgiRouter:
        path = self.workdir / f"router-{self.port}.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=str(SRC), LLMCTL_ROUTER_CONFIG=str(path))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "llmctl.router.asgi:app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        try:
            self._wait_until_it_answers("/healthz", timeout, "uvicorn", self.log_path, step=0.1)
        except BaseException:
            self.stop()
            raise
        return self


def test_the_asgi_app_serves_completions_streams_and_errors(tmp_path: Path) -> None:
    gguf = write_llama_gguf(tmp_path / "tiny.gguf")
    with LlamaServer(gguf, CPU_MODEL, tmp_path) as llama:
        backends = [{"name": "aws/cpu", "url": llama.url, "tier": "cpu", "cloud": "aws",
                     "model": CPU_MODEL, "slots": 2}]  # fmt: skip
        router = AsgiRouter(router_config(backends, two_models(), CPU_MODEL), tmp_path).start()
        try:
            with httpx.Client(base_url=router.url, timeout=60) as client:
                # The lifespan started the health loop: the backend becomes ready.
                wait_for(
                    "the backend to be ready", lambda: client.get("/readyz").status_code == 200
                )
                body = {"model": CPU_MODEL, "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 4}  # fmt: skip
                answer = client.post("/v1/chat/completions", json=body)
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-llm-tier"] == "cpu"
                assert answer.json()["choices"][0]["message"]["role"] == "assistant"

                with client.stream(
                    "POST", "/v1/chat/completions", json={**body, "stream": True}
                ) as stream:
                    assert stream.status_code == 200
                    events = [line for line in stream.iter_lines() if line.startswith("data: ")]
                assert events[-1] == "data: [DONE]"
                assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"

                bad = client.post(
                    "/v1/chat/completions",
                    content=b"{not json",
                    headers={"content-type": "application/json"},
                )
                assert bad.status_code == 400
                assert bad.json()["error"]["type"] == "invalid_request_error"
        finally:
            router.stop()
