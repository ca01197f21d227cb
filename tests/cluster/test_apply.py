"""`kubectl apply --server-side -k clusters/<cloud>/overlays/gpu` against a real API server with
the real CRDs (KEDA, prometheus-operator): every object is accepted, validated by the server's
own schemas (CRDs included), and a second apply changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.catalog import CloudName
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import delete_namespace, reset_llmctl_objects

pytestmark = pytest.mark.tools


def _state(plane: ControlPlane, overlay: Path) -> dict[str, str]:
    """For every object the overlay names: what the applier (`kubectl`) owns and when it last
    changed it, which only the apply itself can change. Not the generation: KEDA's scale of the
    GPU Deployment to zero at its first poll (the manifest leaves `replicas` to it) bumps it, a
    controller's write that once landed between the two applies."""
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
        state[key] = json.dumps([owned[0]["time"], owned[0]["fieldsV1"]])
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
        assert not changed, "a second apply changed " + "; ".join(
            f"{k}: {before[k]} -> {after.get(k)}" for k in sorted(changed)
        )
        # kubectl diff agrees: nothing left to change (exit code 0 means no difference).
        control_plane.kubectl(
            "diff", "--server-side", "--field-manager=kubectl", "-k", str(overlay)
        )
    finally:
        control_plane.kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false")
        delete_namespace(control_plane, "llm-server")


ROUTER_SETTINGS = """\
federation:
  routerUrls:
    aws: https://llm.aws.example.com
    azure: https://llm.azure.example.com
    gcp: https://llm.gcp.example.com
router:
  expose: {enabled: true}
  apiKeys:
    secretName: router-keys
    keys:
      - {name: team-a, gpuTokensPerDay: 200000, overBudget: refuse}
      - {name: batch, tiers: [cpu], gpuWaitSeconds: 30}
    budgetStore: {prometheusUrl: "http://prometheus-operated.monitoring.svc:9090"}
  gpuWait: {defaultSeconds: 60, maxSeconds: 600}
"""


def test_an_overlay_with_gpu_wait_and_named_keys_applies_as_rendered(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Session 34: llmctl.yaml's router.gpuWait and named keys, rendered, applied to the real
    API server: the ConfigMap the router reads back loads with the settings as configured, the
    router takes its keys from the Secret by reference only, and the exposed Ingress allows the
    longest wait plus the first byte."""
    from llmctl.config import GiveUp, load_stack
    from llmctl.manifests.render import render_tree
    from llmctl.manifests.writer import tree_files, write_files
    from llmctl.router.table import RouterConfig

    config = tmp_path / "llmctl.yaml"
    config.write_text(ROUTER_SETTINGS)
    stack = load_stack(config_file=config, env={}).stack
    write_files(tmp_path / "clusters", tree_files(render_tree(stack)))
    overlay = tmp_path / "clusters" / "aws" / "overlays" / "gpu"
    reset_llmctl_objects(control_plane)
    try:
        applied = control_plane.kubectl(
            "apply", "--server-side", "--field-manager=kubectl", "-k", str(overlay)
        )
        assert "serverside-applied" in applied
        stored = json.loads(
            control_plane.kubectl(
                "get", "configmap", "llm-router-config", "-n", "llm-server", "-o", "json"
            )
        )
        table = RouterConfig.model_validate(yaml.safe_load(stored["data"]["router.yaml"]))
        assert table.gpu_wait.default_seconds == 60 and table.gpu_wait.max_seconds == 600
        assert table.gpu_wait.on_give_up is GiveUp.FALLBACK
        assert [k.name for k in table.api_keys.keys] == ["team-a", "batch"]
        assert table.api_keys.keys[1].tiers == ("cpu",)
        assert table.api_keys.budget_store is not None
        router = json.loads(
            control_plane.kubectl(
                "get", "deployment", "llm-router", "-n", "llm-server", "-o", "json"
            )
        )
        env = router["spec"]["template"]["spec"]["containers"][0]["env"]
        keys = next(e for e in env if e["name"] == table.api_keys.env)
        assert keys["valueFrom"] == {"secretKeyRef": {"name": "router-keys", "key": "api-keys"}}
        ingress = json.loads(
            control_plane.kubectl("get", "ingress", "llm-router", "-n", "llm-server", "-o", "json")
        )
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "720"
    finally:
        control_plane.kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false")
        delete_namespace(control_plane, "llm-server")
