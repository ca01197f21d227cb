"""Real llama.cpp servers for end-to-end tests: start one on a free loopback port with a GGUF,
wait for /health, stop it, start it again on the same port.

Shared by the router's end-to-end tests and `llmctl test-inference`'s tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.tools import require_tool

# The two models the end-to-end tests route, as the catalog names and sizes them: the CPU
# tier's default and the GPU tier's.
CPU_MODEL = "tinyllama-1.1b-chat"
GPU_MODEL = "llama-2-7b-chat"


def routed_models(
    cpu_aliases: tuple[str, ...] = (), gpu_aliases: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The router config's `models` for the two, with the aliases a test asks for."""
    models: list[dict[str, Any]] = []
    for name, parameters, aliases in (
        (CPU_MODEL, 1_100_000_000, cpu_aliases),
        (GPU_MODEL, 6_740_000_000, gpu_aliases),
    ):
        models.append({"name": name, "parameters": parameters})
        if aliases:
            models[-1]["aliases"] = list(aliases)
    return models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One `llama-server` process serving one model under one alias, with --metrics."""

    def __init__(
        self,
        model: Path,
        alias: str,
        log_dir: Path,
        *,
        port: int | None = None,
        ctx: int = 512,
        parallel: int = 2,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = require_tool("llama-server", "LLAMA_SERVER_BIN")
        self.model, self.alias, self.log_dir = model, alias, log_dir
        self.port = port or free_port()
        self.ctx, self.parallel, self.extra_args = ctx, parallel, extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LlamaServer:
        log = (self.log_dir / f"llama-{self.alias}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-m",
                str(self.model),
                "--alias",
                self.alias,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "-c",
                str(self.ctx),
                "-np",
                str(self.parallel),
                "-t",
                "1",
                "--metrics",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama-server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200 and json.load(response).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"llama-server on {self.url} not healthy after {timeout} s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_dir / f"llama-{self.alias}-{self.port}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL for a crash); the port stays reserved for a restart."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
