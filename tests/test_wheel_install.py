"""The README's install lines, from a wheel built from the checkout, in a fresh venv elsewhere:
`pip install <wheel>`, `llmctl render` in an empty directory, then `helm template` on the chart
that render wrote and pointed to. Outside a checkout the chart used to be missing (review
finding 9): render wrote its values files but not Chart.yaml or the templates.

Kept bounded: the wheel is installed with --no-deps, and the venv sees the test environment's
own dependencies through a .pth line (no index, no network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import yaml

from tests.support.tools import require_tool


def test_wheel_in_a_fresh_venv_renders_a_chart_helm_can_use(repo: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(dist),
            str(repo),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("llmctl_k8s-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # typer, rich, jinja2, pyyaml, pydantic from this environment; not its editable llmctl
    # (a path added by a .pth line does not have its own .pth files processed).
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr

    work = tmp_path / "empty"
    work.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    render = subprocess.run(
        [str(env_dir / "bin" / "llmctl"), "render"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert render.returncode == 0, render.stderr
    where = subprocess.run(
        [str(python), "-c", "import llmctl; print(llmctl.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site), f"llmctl came from {where}, not the wheel"
    assert "42 file(s) written" in render.stdout
    # The command it printed, run as printed (the README's `helm install ... charts/llm-router`).
    shown = re.search(r"helm install <release> (\S+) -f", render.stdout)
    assert shown, render.stdout
    chart = work / shown.group(1)
    assert (chart / "Chart.yaml").is_file() and (chart / "templates").is_dir()
    # The prices ship too, and the hint for a missing extra installs from this very wheel.
    cost = subprocess.run(
        [str(env_dir / "bin" / "llmctl"), "cost", "estimate", "-o", "json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cost.returncode == 0, cost.stderr
    hint = subprocess.run(
        [str(python), "-c", "from llmctl.extras import install_command as c; print(c('cloud'))"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{python} -m pip install" in hint and f"{wheel.name}[cloud]" in hint, hint
    helm = require_tool("helm")
    for cloud in ("aws", "azure", "gcp"):
        out = subprocess.run(
            [
                helm,
                "template",
                "llm",
                str(chart),
                "-n",
                "llm-server",
                "-f",
                str(chart / f"values-{cloud}-gpu.yaml"),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        assert out.returncode == 0, out.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
        assert {"Deployment", "Service", "ScaledObject"} <= kinds, kinds
