"""The image's Dockerfile passes hadolint, and its entrypoint starts what it is asked for."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.tools import require_tool

pytestmark = pytest.mark.tools


def test_hadolint_passes(repo: Path) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "-f", "json", str(repo / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_dockerfile_uses_the_pinned_llama_cpp_images(repo: Path) -> None:
    from llmctl.config import Images

    text = (repo / "Dockerfile").read_text()
    images = Images()
    release = str(images.llama_server).rsplit("-", 1)[1]
    assert f"ARG LLAMA_CPP_RELEASE={release}" in text
    official = "ghcr.io/ggml-org/llama.cpp:${LLAMA_VARIANT}-${LLAMA_CPP_RELEASE}"
    assert f"FROM ${{LLAMA_IMAGE:-{official}}} AS base" in text
    assert str(images.llama_server_cuda).endswith(f"server-cuda-{release}")
    assert "USER 10001" in text


# What the entrypoint runs for the router, with LLMCTL_ROUTER_CONFIG and PORT set as below.
ROUTER = "llmctl router serve --config /cfg/router.yaml --host 0.0.0.0 --port 9000".split()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ROUTER),
        (["router", "--log-level", "debug"], [*ROUTER, "--log-level", "debug"]),
    ],
)
def test_entrypoint_runs_the_router(
    repo: Path, tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    fake = tmp_path / "llmctl"
    fake.write_text('#!/bin/sh\necho llmctl "$@"\n')
    fake.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{tmp_path}:{os.environ['PATH']}",
        LLMCTL_ROUTER_CONFIG="/cfg/router.yaml",
        PORT="9000",
    )
    result = subprocess.run(
        ["sh", str(repo / "docker" / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == expected


def test_entrypoint_runs_anything_else_as_given(repo: Path) -> None:
    result = subprocess.run(
        ["sh", str(repo / "docker" / "entrypoint.sh"), "echo", "hi"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == "hi\n"
