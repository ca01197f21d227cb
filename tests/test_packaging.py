"""The wheel carries templates/ (and charts/), so `llmctl render` works from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    """This environment's pip, quiet, no dependencies (no index, no network); it must succeed.
    Also used by tests/test_wheel_install.py."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--no-deps"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def build_wheel(repo: Path, out: Path) -> Path:
    """The wheel of the checkout at `repo`, built into `out`."""
    pip("wheel", "-w", str(out), str(repo))
    (wheel,) = out.glob("llmctl_k8s-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Path:
    return build_wheel(repo, tmp_path_factory.mktemp("wheel"))


def test_wheel_ships_the_templates(wheel: Path, repo: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (repo / "templates").rglob("*.j2"):
        relative = template.relative_to(repo / "templates").as_posix()
        assert f"llmctl/_assets/templates/{relative}" in names


def test_wheel_ships_the_helm_chart(wheel: Path, repo: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    chart = repo / "charts" / "llm-router"
    files = [p for p in chart.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert f"llmctl/_assets/charts/llm-router/{path.relative_to(chart).as_posix()}" in names


def test_installed_wheel_renders_from_any_directory(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip("install", "--target", str(site), str(wheel))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    # Only the installed copy is importable: no source tree on the path.
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llmctl, sys; print(llmctl.__file__); "
            "from llmctl.cli.main import main; sys.argv=['llmctl','render']; main()",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(site))
    built = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("kustomization.yaml"))
    assert len(built) == 7 and "clusters/components/nvidia-gpu/kustomization.yaml" in built
