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
import sysconfig
import venv
from pathlib import Path

import yaml

from tests.support.tools import require_tool
from tests.test_packaging import build_wheel, pip


def test_wheel_in_a_fresh_venv_renders_a_chart_helm_can_use(repo: Path, tmp_path: Path) -> None:
    wheel = build_wheel(repo, tmp_path / "dist")

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
    pip("--python", str(python), "install", str(wheel))

    work = tmp_path / "empty"
    work.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*argv: str | Path) -> str:
        """A command of the fresh venv, run in the empty directory; it must succeed."""
        done = subprocess.run(
            [str(a) for a in argv], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    rendered = run(env_dir / "bin" / "llmctl", "render")
    where = run(python, "-c", "import llmctl; print(llmctl.__file__)")
    assert where.startswith(site), f"llmctl came from {where}, not the wheel"
    assert "42 file(s) written" in rendered
    # The command it printed, run as printed (the README's `helm install ... charts/llm-router`).
    shown = re.search(r"helm install <release> (\S+) -f", rendered)
    assert shown, rendered
    chart = work / shown.group(1)
    assert (chart / "Chart.yaml").is_file() and (chart / "templates").is_dir()
    # The prices ship too, and the hint for a missing extra installs from this very wheel.
    run(env_dir / "bin" / "llmctl", "cost", "estimate", "-o", "json")
    hint = run(python, "-c", "from llmctl.extras import install_command as c; print(c('cloud'))")
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
