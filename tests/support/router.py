"""The router as the image runs it (`llmctl router serve`), in its own process on a free
loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.llama import free_port

SRC = Path(__file__).resolve().parents[2] / "src"

# The two models the end-to-end tests route between: the small one for the CPU tier, the 7B one
# for the GPU tier (catalog names; the servers load whatever GGUF a test writes).
CPU_MODEL = "tinyllama-1.1b-chat"
GPU_MODEL = "llama-2-7b-chat"


def two_models(
    cpu_aliases: list[str] | None = None, gpu_aliases: list[str] | None = None
) -> list[dict[str, Any]]:
    """The router config's `models:` for CPU_MODEL and GPU_MODEL, with these aliases."""
    models: list[dict[str, Any]] = [
        {"name": CPU_MODEL, "parameters": 1_100_000_000},
        {"name": GPU_MODEL, "parameters": 6_740_000_000},
    ]
    for model, aliases in zip(models, (cpu_aliases, gpu_aliases), strict=True):
        if aliases:
            model["aliases"] = aliases
    return models


def router_config(
    backends: list[dict[str, Any]], models: list[dict[str, Any]], fallback_model: str, **extra: Any
) -> dict[str, Any]:
    """A router.yaml as `llmctl render` writes it, with quick health checks for tests."""
    config: dict[str, Any] = {
        "cloud": "aws",
        "models": models,
        "backends": backends,
        "policy": {"fallbackModel": fallback_model},
        "healthCheck": {"intervalSeconds": 0.2, "maxBackoffSeconds": 0.5},
    }
    config.update(extra)
    return config


class LoopbackProcess:
    """A server a test runs as a process on a free loopback port (the router here, Prometheus in
    tests/cluster/prometheus.py): its URL, the wait until it answers, its stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_until_it_answers(
        self, path: str, timeout: float, what: str, log: Path, step: float
    ) -> None:
        """Until GET `path` answers; a RuntimeError with the end of `log` if the process exits,
        one that says so after `timeout` seconds."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {self.proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(step)
        raise RuntimeError(f"{what} did not answer {path} within {timeout:.0f} s")

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Terminate, wait up to 10 s, then kill."""
        if self.proc is not None and self.proc.poll() is None:
            self._terminate(self.proc)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


class RouterProcess(LoopbackProcess):
    def __init__(
        self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.config, self.workdir = config, workdir
        self.env = env or {}
        self.log_path = workdir / f"router-{self.port}.log"

    def start(self, timeout: float = 90.0) -> RouterProcess:
        path = self.workdir / f"router-{self.port}.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=str(SRC), **self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmctl",
                "router",
                "serve",
                "--config",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        try:
            self._wait_until_it_answers("/healthz", timeout, "the router", self.log_path, step=0.1)
        except BaseException:
            self.stop()  # a router that never answered is not left running
            raise
        return self

    def stream_with_openai(
        self, api_key: str, model: str, max_tokens: int
    ) -> tuple[Any, list[Any]]:
        """ "Tell me a story", streamed through the official OpenAI client: the response's
        headers and its parsed chunks."""
        import openai

        client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)
        with client.chat.completions.with_streaming_response.create(
            model=model,
            messages=[{"role": "user", "content": "Tell me a story"}],
            max_tokens=max_tokens,
            stream=True,
        ) as raw:
            return raw.headers, list(raw.parse())

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        # The first SIGTERM starts the graceful drain, a second one skips its waiting.
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
