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
import shutil
import subprocess
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.tools import require_tool
from tests.test_packaging import build_wheel, pip


@dataclass(frozen=True)
class Installed:
    """llmctl installed from its wheel, not editable, in a fresh venv: the README's install."""

    wheel: Path
    env_dir: Path
    python: Path
    site: str
    home: Path

    def run(self, cwd: Path, *argv: str | Path, code: int = 0) -> subprocess.CompletedProcess[str]:
        """A command of the fresh venv, run in `cwd`; it must exit with `code`."""
        done = subprocess.run(
            [str(a) for a in argv],
            cwd=cwd,
            env={"PATH": f"{self.env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, done.stderr
        return done

    def llmctl(self, cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return self.run(cwd, self.env_dir / "bin" / "llmctl", *args, code=code)


@pytest.fixture(scope="module")
def installed(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp_path = tmp_path_factory.mktemp("wheel-install")
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
    return Installed(wheel=wheel, env_dir=env_dir, python=python, site=site, home=tmp_path)


def test_wheel_in_a_fresh_venv_renders_a_chart_helm_can_use(
    installed: Installed, tmp_path: Path
) -> None:
    wheel, env_dir, python, site = (
        installed.wheel,
        installed.env_dir,
        installed.python,
        installed.site,
    )
    work = tmp_path / "empty"
    work.mkdir()

    def run(*argv: str | Path) -> str:
        """A command of the fresh venv, run in the empty directory; it must succeed."""
        return installed.run(work, *argv).stdout

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


def test_render_in_a_checkout_reads_its_templates_and_leaves_its_chart_alone(
    installed: Installed, repo: Path, tmp_path: Path
) -> None:
    # Review 2026-12-06, N1: with `pip install .` (not editable), render in the checkout
    # replaced charts/llm-router/ with the copy frozen in the wheel and ignored templates/.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(repo / "pyproject.toml", checkout)
    shutil.copytree(repo / "templates", checkout / "templates")
    shutil.copytree(repo / "charts", checkout / "charts", ignore=shutil.ignore_patterns("__py*"))
    values = checkout / "charts" / "llm-router" / "values.yaml"
    values.write_text(values.read_text().replace("\ncloud: aws", "\ncloud: gcp", 1))
    assert "\ncloud: gcp" in values.read_text()
    namespace = checkout / "templates" / "base" / "namespace.yaml.j2"
    namespace.write_text(namespace.read_text() + '  annotations: {"team": "ml-platform"}\n')
    chart_before = {p: p.read_bytes() for p in (checkout / "charts").rglob("*") if p.is_file()}

    rendered = installed.llmctl(checkout, "render").stdout

    assert "\ncloud: gcp" in values.read_text(), "render overwrote the chart's values.yaml"
    for path, data in chart_before.items():
        if not path.name.startswith("values-"):
            assert path.read_bytes() == data, f"render changed {path}"
    assert "this checkout's own, left as it is" in rendered, rendered
    for cloud in ("aws", "azure", "gcp"):
        objects = yaml.safe_load(
            (checkout / "clusters" / cloud / "base" / "namespace.yaml").read_text()
        )
        assert objects["metadata"]["annotations"] == {"team": "ml-platform"}
    # From a subdirectory too: the checkout is found above the working directory.
    (checkout / "docs").mkdir()
    installed.llmctl(checkout / "docs", "render", "--out", "..")
    assert "\ncloud: gcp" in values.read_text()


def test_render_never_overwrites_an_edit_without_force(
    installed: Installed, tmp_path: Path
) -> None:
    work = tmp_path / "site"
    work.mkdir()
    installed.llmctl(work, "render")
    values = work / "charts" / "llm-router" / "values.yaml"
    overlay = work / "clusters" / "aws" / "overlays" / "gpu" / "scaledobject.yaml"
    edited = {
        values: values.read_text().replace("\ncloud: aws", "\ncloud: gcp", 1),
        overlay: overlay.read_text() + "# tuned by hand\n",
    }
    for path, text in edited.items():
        path.write_text(text)

    refused = installed.llmctl(work, "render", "--set", "gpu.maxReplicas=3", code=1)
    assert "render would overwrite 2 file(s) changed since it wrote them" in " ".join(
        refused.stderr.replace("│", " ").split()
    ), refused.stderr
    assert "--force" in refused.stderr
    for path, text in edited.items():
        assert path.read_text() == text
    # Nothing else was written either: the refused config is not half applied.
    replicas = work / "clusters" / "azure" / "overlays" / "gpu" / "scaledobject.yaml"
    assert "maxReplicaCount: 3" not in replicas.read_text()

    installed.llmctl(work, "render", "--force")
    assert "\ncloud: aws" in values.read_text()
    assert "# tuned by hand" not in overlay.read_text()

    # Render's own output, out of date after a config change, is replaced without a question.
    installed.llmctl(work, "render", "--set", "gpu.maxReplicas=3")
    assert "maxReplicaCount: 3" in replicas.read_text()
