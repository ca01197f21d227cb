"""Running the real helm binary on charts/llm-router, and reading what it renders."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llm-router"
RELEASE = "demo"
NAMESPACE = "llm-server"


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = require_tool("helm")
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def template(
    *args: str, namespace: str = NAMESPACE, chart: Path = CHART, release: str = RELEASE
) -> list[dict[str, Any]]:
    """The objects `helm template` prints; fails the test with helm's message if it fails."""
    result = run_helm("template", release, str(chart), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def template_error(*args: str) -> str:
    """helm's error for a render that must fail."""
    result = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0, f"helm template {' '.join(args)} should have failed"
    return result.stderr


def values_file(cloud: str, tier: str) -> str:
    return str(CHART / f"values-{cloud}-{tier}.yaml")


def by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec
