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
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
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
    assert build["build-args"].strip().splitlines() == [
        "LLAMA_VARIANT=${{ matrix.llama_variant }}",
        "LLAMA_IMAGE=${{ matrix.llama_image == 'sm75' && needs.llama-server-cuda.outputs.image "
        "|| '' }}",
    ]
    assert variants["cpu"]["llama_image"] == "" and variants["cuda"]["llama_image"] == "sm75"
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


def test_the_cuda_images_carry_real_t4_code(tmp_path: Path) -> None:
    """Issue 28: llama.cpp's official server-cuda image has sm_75 only as PTX (75-virtual in its
    ggml-cuda CMakeLists), JIT-compiled in every new pod. The release builds the pinned
    release's own .devops/cuda.Dockerfile with real code for the T4 and the other GPUs it names,
    and the router's CUDA variant starts from that image."""
    job = _workflow()["jobs"]["llama-server-cuda"]
    archs = job["env"]["CUDA_ARCHITECTURES"].split(";")
    assert "75-real" in archs and "75-virtual" not in archs
    assert {"80-real", "86-real", "89-real", "90-real"} <= set(archs)
    build = next(s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["context"] == (
        "https://github.com/ggml-org/llama.cpp.git#${{ steps.image.outputs.release }}"
    )
    assert build["with"]["file"] == ".devops/cuda.Dockerfile"
    assert build["with"]["target"] == "server"
    assert build["with"]["build-args"].strip() == "CUDA_DOCKER_ARCH=${{ env.CUDA_ARCHITECTURES }}"
    assert build["with"]["push"] is True
    assert _job()["needs"] == "llama-server-cuda"

    # The step that names the release and the image, run for real.
    step = next(s for s in job["steps"] if s.get("id") == "image")
    out = Path(subprocess.run(["mktemp"], capture_output=True, text=True).stdout.strip())
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_OUTPUT": str(out),
        "GITHUB_REPOSITORY_OWNER": "LlmCtl",
    }
    subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=REPO, env=env, check=True)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    release = Images().llama_server_cuda.rsplit("-", 1)[1]
    assert outputs == {
        "release": release,
        "image": f"ghcr.io/llmctl/llama.cpp:server-cuda-{release}-sm75",
    }


def test_the_dockerfile_builds_from_the_official_image_unless_told() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG LLAMA_IMAGE=\n" in dockerfile
    official = "ghcr.io/ggml-org/llama.cpp:${LLAMA_VARIANT}-${LLAMA_CPP_RELEASE}"
    assert f"FROM ${{LLAMA_IMAGE:-{official}}} AS base" in dockerfile
