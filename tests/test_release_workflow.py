"""The release workflow publishes the router image that `images.router` defaults to.

GitHub Actions can't run here, so the workflow is checked as data (what it triggers on, what it
builds, for which platforms, with which base images), and its one shell step is run for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from llmctl.config import DEFAULT_ROUTER_IMAGE, Images

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def _workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def _job() -> dict[str, Any]:
    job: dict[str, Any] = _workflow()["jobs"]["router-image"]
    return job


def _step(uses_prefix: str) -> dict[str, Any]:
    return next(s for s in _job()["steps"] if s.get("uses", "").startswith(uses_prefix))


def _version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_it_runs_on_version_tags_only() -> None:
    triggers = _workflow()[True]  # YAML 1.1 reads the key `on` as true
    assert triggers == {"push": {"tags": ["v*"]}}
    assert _job()["permissions"] == {"contents": "read", "packages": "write"}


def test_every_action_is_pinned_by_commit() -> None:
    for step in _job()["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_it_builds_both_variants_from_the_pinned_llama_cpp_images() -> None:
    release = re.search(r"^ARG LLAMA_CPP_RELEASE=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert release
    variants = {v["variant"]: v for v in _job()["strategy"]["matrix"]["include"]}
    assert set(variants) == {"cpu", "cuda"}
    images = Images()
    bases = {
        name: f"ghcr.io/ggml-org/llama.cpp:{v['llama_variant']}-{release.group(1)}"
        for name, v in variants.items()
    }
    assert bases == {"cpu": images.llama_server, "cuda": images.llama_server_cuda}
    assert variants["cpu"]["platforms"].split(",") == ["linux/amd64", "linux/arm64"]
    assert variants["cuda"]["platforms"] == "linux/amd64"
    build = _step("docker/build-push-action@")["with"]
    assert build["push"] is True
    assert build["build-args"].strip() == "LLAMA_VARIANT=${{ matrix.llama_variant }}"
    assert build["platforms"] == "${{ matrix.platforms }}"


def test_the_default_router_image_is_what_this_version_publishes() -> None:
    images = _step("docker/metadata-action@")["with"]["images"]
    assert images == "ghcr.io/${{ github.repository_owner }}/llm-router"
    assert DEFAULT_ROUTER_IMAGE == f"ghcr.io/llmctl/llm-router:{_version()}"
    assert "type=semver,pattern={{version}}" in _step("docker/metadata-action@")["with"]["tags"]


def test_a_tag_that_is_not_the_package_version_fails_the_release() -> None:
    step = next(s for s in _job()["steps"] if s.get("name") == "The tag names the package version")

    def run(tag: str) -> int:
        env = {"PATH": os.environ["PATH"], "GITHUB_REF_NAME": tag}
        return subprocess.run(
            ["bash", "-eo", "pipefail", "-c", step["run"]], cwd=REPO, env=env, capture_output=True
        ).returncode

    assert run(f"v{_version()}") == 0
    assert run("v9.9.9") == 1
