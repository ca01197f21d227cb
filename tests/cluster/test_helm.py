"""The chart against a real API server with the real CRDs: `helm install`, `helm upgrade` with
changed values (the change reaches the cluster), `helm uninstall` (nothing the release made is
left behind)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llmctl.catalog import CloudName
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import delete_namespace, get_json, wait_for
from tests.support.tools import require_tool

pytestmark = pytest.mark.tools

RELEASE, NAMESPACE = "llm", "llm-helm"
# Objects that come and go on their own (controllers, leader election, events): not the release's.
# componentstatuses is deprecated and probes the components rather than listing stored objects.
TRANSIENT = {"events", "events.events.k8s.io", "leases.coordination.k8s.io", "componentstatuses"}


def helm(plane: ControlPlane, *args: str) -> str:
    done = subprocess.run(
        [require_tool("helm"), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def everything(plane: ControlPlane) -> set[str]:
    """Every object of every listable kind in the cluster, by kind, namespace and name."""
    kinds = [
        k
        for k in plane.kubectl("api-resources", "--verbs=list", "-o", "name").split()
        if k not in TRANSIENT
    ]
    listed = json.loads(plane.kubectl("get", ",".join(kinds), "-A", "-o", "json"))
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in listed["items"]
        if not (o["kind"] == "Namespace" and o["metadata"]["name"] == NAMESPACE)
    }


@pytest.mark.parametrize("cloud", list(CloudName))
def test_install_upgrade_uninstall_leaves_nothing(
    cloud: CloudName, control_plane: ControlPlane, repo: Path
) -> None:
    chart = repo / "charts" / "llm-router"
    values = str(chart / f"values-{cloud.value}-gpu.yaml")
    control_plane.kubectl("create", "namespace", NAMESPACE)
    before = everything(control_plane)
    try:
        helm(
            control_plane,
            "install",
            RELEASE,
            str(chart),
            "-n",
            NAMESPACE,
            "-f",
            values,
            "--wait=false",
        )
        router = get_json(control_plane, "deployment", "-n", NAMESPACE, "-l",
                          "app.kubernetes.io/component=router")["items"]  # fmt: skip
        assert len(router) == 1 and router[0]["spec"]["replicas"] == 2
        scaled = get_json(control_plane, "scaledobject", "-n", NAMESPACE)["items"]
        assert len(scaled) == 1 and scaled[0]["spec"]["cooldownPeriod"] == 300

        helm(control_plane, "upgrade", RELEASE, str(chart), "-n", NAMESPACE, "-f", values,
             "--set", "router.replicas=3", "--set", "gpu.idleTimeoutSeconds=600")  # fmt: skip
        router = get_json(control_plane, "deployment", "-n", NAMESPACE, "-l",
                          "app.kubernetes.io/component=router")["items"]  # fmt: skip
        assert router[0]["spec"]["replicas"] == 3
        scaled = get_json(control_plane, "scaledobject", "-n", NAMESPACE)["items"]
        assert scaled[0]["spec"]["cooldownPeriod"] == 600
        assert "STATUS: deployed" in helm(control_plane, "status", RELEASE, "-n", NAMESPACE)
        history = json.loads(helm(control_plane, "history", RELEASE, "-n", NAMESPACE, "-o", "json"))
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"),
            (2, "deployed"),
        ]

        helm(
            control_plane,
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--wait",
            "--cascade",
            "foreground",
        )

        def leftovers() -> set[str] | None:
            left = everything(control_plane) - before
            return None if left else {"none"}

        try:
            wait_for("the release's objects to be gone", leftovers, timeout_s=90)
        except AssertionError:
            raise AssertionError(
                f"left behind: {sorted(everything(control_plane) - before)}"
            ) from None
    finally:
        subprocess.run([require_tool("helm"), f"--kubeconfig={control_plane.kubeconfig}",
                        "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found"],
                       capture_output=True)  # fmt: skip
        delete_namespace(control_plane, NAMESPACE)
