"""The router image, built by scripts/build-image.sh from the unchanged Dockerfile on the
stand-in for llama.cpp's official server image, checked as far as no kubelet is needed: the
image configs, the archives containerd imports, and the images' own processes run by runc as
the pods run them (image user, read-only root, no capabilities). tests/cluster/ runs the same
archives as real pods."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from llmctl import __version__
from llmctl.config import Images
from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import free_port
from tests.support.oci_image import Bind, OciArchive, RuncProcess, in_rootfs, sha256_file
from tests.support.router import CPU_MODEL, router_config, two_models
from tests.support.tools import require_tool

# scripts/test.sh builds the images before pytest; the fixture only reads them (--cached), so a
# change to a file the Dockerfile copies fails here naming the command that rebuilds them.
WARM_TIMEOUT = 120  # a warm build-image.sh hashes its inputs and prints the cached paths

pytestmark = [pytest.mark.tools]


@dataclass
class Built:
    lines: list[tuple[str, Path]]
    router: OciArchive
    base: OciArchive


def build(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """build-image.sh in a session of its own: past WARM_TIMEOUT the whole group is killed, so
    a build it started (the tree changed since the images were built) is not left running."""
    argv = ["bash", str(repo / "scripts" / "build-image.sh"), *args]
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=repo,
        env=dict(os.environ, LLAMA_SERVER_BIN=require_tool("llama-server", "LLAMA_SERVER_BIN")),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=WARM_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(
                f"build-image.sh {' '.join(args)} ran past {WARM_TIMEOUT} s (it was building: "
                "a file the Dockerfile copies changed since the images were built); killed it. "
                "Run `bash scripts/build-image.sh`, then the test again"
            )
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="module")
def built(repo: Path) -> Built:
    result = build(repo, "--cached")
    if result.returncode != 0:
        pytest.fail(result.stderr.strip())
    lines = [
        (ref, Path(path)) for ref, path in (line.split() for line in result.stdout.splitlines())
    ]
    # The router image and its base: the model download runs in the router image itself.
    assert len(lines) == 2, result.stdout
    router, base = (OciArchive(path) for _, path in lines)
    return Built(lines, router, base)


@pytest.fixture(scope="module")
def rootfs(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The router image's root filesystem, unpacked from its archive."""
    root = built.router.unpack(tmp_path_factory.mktemp("router-image") / "rootfs")
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False, timeout=300)


@pytest.fixture(scope="module")
def base_rootfs(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = built.base.unpack(tmp_path_factory.mktemp("base-image") / "rootfs")
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False, timeout=300)


def dockerfile_release(repo: Path) -> str:
    match = re.search(r"^ARG LLAMA_CPP_RELEASE=(\S+)$", (repo / "Dockerfile").read_text(), re.M)
    assert match
    return match.group(1)


def test_archives_carry_the_names_containerd_imports_them_under(built: Built, repo: Path) -> None:
    # `ctr images import` names an OCI archive's image after its ref.name annotation when that
    # is a full reference (containerd core/images/archive/reference.go, AddRefPrefix).
    images = Images()
    (router_ref, _), (base_ref, _) = built.lines
    assert re.fullmatch(r"localhost/llmctl/llm-router:[0-9a-f]{16}", router_ref)
    assert base_ref == str(images.llama_server)
    assert base_ref == f"ghcr.io/ggml-org/llama.cpp:server-{dockerfile_release(repo)}"
    assert [built.router.ref_name, built.base.ref_name] == [router_ref, base_ref]


def test_router_image_config_is_what_the_dockerfile_says(built: Built) -> None:
    config = built.router.config
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/local/bin/llmctl-entrypoint"]
    assert config["Cmd"] == ["router"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["WorkingDir"] == "/app"
    env = built.router.env()
    assert env["LLMCTL_ROUTER_CONFIG"] == "/etc/llmctl/router.yaml"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    # The Dockerfile extends the base's PATH: the base must have one, or "$PATH" would leave an
    # empty entry (the working directory) at the end.
    path = env["PATH"].split(":")
    assert path[:2] == ["/opt/llmctl/bin", "/app"] and "/usr/bin" in path and "" not in path
    # Built on the stand-in base, whose layers it starts with.
    annotations = built.router.manifest["annotations"]
    assert annotations["org.opencontainers.image.base.name"] == built.lines[1][0]
    base_layers = [layer["digest"] for layer in built.base.manifest["layers"]]
    router_layers = [layer["digest"] for layer in built.router.manifest["layers"]]
    assert router_layers[: len(base_layers)] == base_layers
    assert built.router.image_config["architecture"] == "amd64"


def test_stand_in_base_is_configured_as_the_official_server_image(built: Built, repo: Path) -> None:
    # llama.cpp .devops/cpu.Dockerfile, "server" target: ENV LLAMA_ARG_HOST=0.0.0.0,
    # WORKDIR /app, ENTRYPOINT ["/app/llama-server"]; it runs as root (no USER).
    config = built.base.config
    assert config["Entrypoint"] == ["/app/llama-server"]
    assert not config.get("Cmd")
    assert config["WorkingDir"] == "/app"
    assert built.base.env()["LLAMA_ARG_HOST"] == "0.0.0.0"
    assert not config.get("User")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == dockerfile_release(repo)


def test_llama_server_in_the_image_is_the_binary_the_tests_run(rootfs: Path, repo: Path) -> None:
    binary = in_rootfs(rootfs, "/app/llama-server")
    assert binary.is_file()
    assert binary.stat().st_mode & 0o005 == 0o005, "uid 10001 must be able to run it"
    tests_binary = Path(require_tool("llama-server", "LLAMA_SERVER_BIN"))
    assert sha256_file(binary) == sha256_file(tests_binary)
    release_file = tests_binary.parent.parent / "llama-cpp-release"
    assert release_file.read_text().split()[0] == dockerfile_release(repo)


def test_build_mounts_leave_nothing_in_the_image(rootfs: Path, base_rootfs: Path) -> None:
    # The host's CA bundle is mounted over the base's for pip during the build only.
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    assert sha256_file(in_rootfs(rootfs, bundle)) == sha256_file(in_rootfs(base_rootfs, bundle))
    assert not in_rootfs(rootfs, "/etc/pip.conf").exists()
    # Ubuntu's apt clean-up, as the official base has it: the Dockerfile's install leaves no
    # package caches behind.
    assert not list(in_rootfs(rootfs, "/var/cache/apt").glob("*.bin"))
    assert not list(in_rootfs(rootfs, "/var/cache/apt/archives").glob("*.deb"))


def test_entrypoint_runs_llama_server_of_the_pinned_release_as_the_image_user(
    built: Built, rootfs: Path, tmp_path: Path
) -> None:
    result = RuncProcess(built.router, rootfs, tmp_path, args=["llama-server", "--version"]).run()
    assert result.returncode == 0, result.stderr
    # The sdist's llama.cpp is a one-commit git checkout: the build count is 1, the commit is
    # the release's (README, "One llama.cpp release").
    release_commit = built.base.config["Labels"]["org.opencontainers.image.revision"]
    match = re.search(r"^version: \S+ \(build \d+, commit ([0-9a-f]+)\)$", result.stderr, re.M)
    assert match, result.stderr
    assert release_commit.startswith(match.group(1)), (match.group(1), release_commit)


def test_entrypoint_runs_llmctl_of_this_checkout(
    built: Built, rootfs: Path, tmp_path: Path
) -> None:
    result = RuncProcess(built.router, rootfs, tmp_path, args=["llmctl", "--version"]).run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"llmctl {__version__}"
    who = RuncProcess(built.router, rootfs, tmp_path, args=["id", "-u"]).run()
    assert who.stdout.strip() == "10001"


def wait_for(url: str, proc: RuncProcess, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            pytest.fail(
                f"{url}: the container exited {proc.proc.returncode}: {log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s: {log.read_text()[-3000:]}")


def test_router_image_serves_a_completion_from_llama_server_in_the_base_image(
    built: Built, rootfs: Path, base_rootfs: Path, tmp_path: Path
) -> None:
    """Both images' default processes as the rendered pods start them (the router: the image's
    entrypoint and Cmd with its config file mounted; llama-server: the base's entrypoint as user
    10001, the model on a read-only volume), a chat completion through the router."""
    models = tmp_path / "models"
    models.mkdir()
    write_llama_gguf(models / "tiny.gguf")
    llama_port, router_port = free_port(), free_port()
    llama = RuncProcess(
        built.base,
        base_rootfs,
        tmp_path,
        args=[
            "-m",
            "/models/tiny.gguf",
            "--alias",
            CPU_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(llama_port),
            "-c",
            "512",
            "-np",
            "1",
            "-t",
            "1",
            "--metrics",
        ],
        user="10001:10001",
        binds=[Bind(models, "/models")],
    )
    config_dir = tmp_path / "router-config"
    config_dir.mkdir()
    backend = {
        "name": "aws/cpu",
        "url": f"http://127.0.0.1:{llama_port}",
        "tier": "cpu",
        "cloud": "aws",
        "model": CPU_MODEL,
        "slots": 1,
        "costWeight": 1.0,
        "hourlyCostUsd": 0.17,
    }
    (config_dir / "router.yaml").write_text(
        yaml.safe_dump(router_config([backend], two_models(), CPU_MODEL), sort_keys=False)
    )
    router = RuncProcess(
        built.router,
        rootfs,
        tmp_path,
        env={"PORT": str(router_port), "HOST": "127.0.0.1"},
        binds=[Bind(config_dir, "/etc/llmctl")],
    )
    llama_log, router_log = tmp_path / "llama.log", tmp_path / "router.log"
    try:
        llama.start(llama_log)
        wait_for(f"http://127.0.0.1:{llama_port}/health", llama, llama_log, 120)
        router.start(router_log)
        wait_for(f"http://127.0.0.1:{router_port}/readyz", router, router_log, 120)
        request = urllib.request.Request(
            f"http://127.0.0.1:{router_port}/v1/chat/completions",
            data=json.dumps(
                {
                    "model": CPU_MODEL,
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
            tier = response.headers["x-llm-tier"]
        assert tier == "cpu"
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
    finally:
        router_status = router.stop()
        llama.stop()
    # SIGTERM to the router drains and exits cleanly (no stream was in flight).
    assert router_status == 0, router_log.read_text()[-3000:]


def test_warm_build_rebuilds_nothing(built: Built, repo: Path) -> None:
    before = {path: path.stat().st_mtime_ns for _, path in built.lines}
    started = time.monotonic()
    result = build(repo)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split() == [str(item) for line in built.lines for item in line]
    assert {path: path.stat().st_mtime_ns for _, path in built.lines} == before
    assert time.monotonic() - started < 60
