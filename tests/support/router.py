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


class RouterProcess:
    def __init__(
        self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.config, self.workdir = config, workdir
        self.port = free_port()
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"router-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RouterProcess:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the router exited with {self.proc.returncode}: "
                    f"{self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"the router did not answer /healthz within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The first SIGTERM starts the graceful drain, a second one skips its waiting.
            self.proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
