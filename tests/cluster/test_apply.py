"""`kubectl apply --server-side -k clusters/<cloud>/overlays/gpu` against a real API server with
the real CRDs (KEDA, prometheus-operator): every object is accepted, validated by the server's
own schemas (CRDs included), and a second apply changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from llmctl.catalog import CloudName
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import delete_namespace, reset_llmctl_objects

pytestmark = pytest.mark.tools


def _state(plane: ControlPlane, overlay: Path) -> dict[str, str]:
    """For every object the overlay names: its generation (bumped by spec changes only) and what
    the applier (`kubectl`) owns and when it last changed it. Controllers' own writes (status,
    PVC binding annotations) change neither, so only the apply itself can."""
    listed = json.loads(
        plane.kubectl("get", "-k", str(overlay), "-o", "json", "--show-managed-fields")
    )
    items: list[dict[str, Any]] = listed["items"]
    state = {}
    for o in items:
        meta = o["metadata"]
        owned = [
            m
            for m in meta["managedFields"]
            if m["manager"] == "kubectl" and m["operation"] == "Apply"
        ]
        assert len(owned) == 1, f"{o['kind']}/{meta['name']}: {meta['managedFields']}"
        key = f"{o['kind']}/{meta.get('namespace', '')}/{meta['name']}"
        state[key] = json.dumps([meta.get("generation"), owned[0]["time"], owned[0]["fieldsV1"]])
    return state


@pytest.mark.parametrize("cloud", list(CloudName))
def test_overlay_applies_and_reapplies_as_a_no_op(
    cloud: CloudName, control_plane: ControlPlane, repo: Path
) -> None:
    overlay = repo / "clusters" / cloud.value / "overlays" / "gpu"
    reset_llmctl_objects(control_plane)
    rendered = control_plane.kubectl("kustomize", str(overlay))
    kinds = [
        line.split(":", 1)[1].strip() for line in rendered.splitlines() if line.startswith("kind:")
    ]
    # The CRD-backed kinds are there, so the server's CRD schemas judge them too.
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule"} <= set(kinds)
    try:
        first = control_plane.kubectl(
            "apply", "--server-side", "--field-manager=kubectl", "-k", str(overlay)
        )
        assert "serverside-applied" in first
        before = _state(control_plane, overlay)
        assert len(before) == len(kinds)
        time.sleep(1.1)  # managedFields times have 1 s resolution: a change would show
        second = control_plane.kubectl(
            "apply", "--server-side", "--field-manager=kubectl", "-k", str(overlay)
        )
        assert "serverside-applied" in second
        after = _state(control_plane, overlay)
        changed = {k for k in before if before[k] != after.get(k)}
        assert not changed, f"a second apply changed {sorted(changed)}"
        # kubectl diff agrees: nothing left to change (exit code 0 means no difference).
        control_plane.kubectl(
            "diff", "--server-side", "--field-manager=kubectl", "-k", str(overlay)
        )
    finally:
        control_plane.kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false")
        delete_namespace(control_plane, "llm-server")
