"""charts/llm-router with the real helm: lint, schema, and assertions on the rendered objects in
the way helm-unittest suites make them (tolerations, GPU limits, labels, namespaces)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.config import Stack
from llmctl.manifests import render
from tests.charts.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    by_name,
    pod_spec,
    run_helm,
    template,
    template_error,
    values_file,
)
from tests.support.kube_schema import validate_strict
from tests.support.tools import require_tool

CLOUDS = [c.value for c in catalog.CLOUDS]
CASES = [(cloud, tier) for cloud in CLOUDS for tier in ("cpu", "gpu")]
IDS = [f"{cloud}-{tier}" for cloud, tier in CASES]
CLUSTER_SCOPED = {"RuntimeClass"}


def test_chart_metadata_follows_the_router_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "llm-router"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == Stack().images.router.rsplit(":", 1)[1]


@pytest.mark.parametrize("values", ["values.yaml", *(f"values-{c}-{t}.yaml" for c, t in CASES)])
def test_helm_lint_strict_passes(values: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(CHART / values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(("cloud", "tier"), CASES, ids=IDS)
def test_every_rendered_object_passes_the_strict_kubernetes_schema(cloud: str, tier: str) -> None:
    objects = template("-f", values_file(cloud, tier))
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "DaemonSet"}
    assert ("demo-nvidia-device-plugin" in names) == (tier == "gpu" and cloud != "gcp")
    assert ("demo-dcgm-exporter" in names) == (tier == "gpu")
    assert ("RuntimeClass" in kinds) == (tier == "gpu")
    observability = {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert kinds & observability == (observability if tier == "gpu" else set())
    for obj in objects:
        validate_strict(obj)


def test_yamllint_passes_on_the_chart_files(repo: Path) -> None:
    yamllint = require_tool("yamllint")
    result = subprocess.run(
        # Relative, so .yamllint.yaml's `ignore: charts/*/templates/` (Go templates) applies.
        [yamllint, "--strict", "-c", ".yamllint.yaml", "charts"],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert result.returncode == 0, result.stdout


# --- values.schema.json -----------------------------------------------------------------------


def _object_schemas(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append((path, node))
        for key, value in node.items():
            found += _object_schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _object_schemas(value, f"{path}/{index}")
    return found


def test_schema_forbids_additional_properties_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _object_schemas(schema)
    assert len(objects) > 15
    loose = [path for path, node in objects if node.get("additionalProperties") is not False]
    assert not loose, f"these levels accept unknown keys: {loose}"


# A --set the schema refuses, and what helm's error says of it.
SCHEMA_REFUSALS = {
    "typo": [
        ("gpu.enabeld=true", "at '/gpu': additional properties 'enabeld' not allowed"),
        ("clod=aws", "additional properties 'clod' not allowed"),
        ("llamacpp.flashattn=true", "at '/llamacpp': additional properties 'flashattn'"),
        ("cpu.model.size=2Gi", "at '/cpu/model': additional properties 'size' not allowed"),
        ("gpu.devicePlugin.namespce=x", "at '/gpu/devicePlugin': additional properties"),
        ("router.limits.maxBody=1", "at '/router/limits': additional properties 'maxBody'"),
        ("router.gpuWait.maxWait=60", "at '/router/gpuWait': additional properties 'maxWait'"),
    ],
    "wrong value": [
        ("llamacpp.parallel=eight", "at '/llamacpp/parallel': got string, want integer"),
        ("gpu.enabled=yes-please", "at '/gpu/enabled': got string, want boolean"),
        ("gpu.count=0", "at '/gpu/count': minimum: got 0, want 1"),
        ("llamacpp.ngl=-2", "at '/llamacpp/ngl': minimum: got -2, want -1"),
        ("cloud=oracle", "at '/cloud'"),
        ("model.path=relative.gguf", "at '/model/path'"),
        ("router.gpuWait.maxDepth=0", "at '/router/gpuWait/maxDepth': minimum: got 0, want 1"),
        ("router.gpuWait.onGiveUp=queue", "at '/router/gpuWait/onGiveUp'"),
    ],
}


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        pytest.param(flag, message, id=f"{kind}: {flag}")
        for kind, cases in SCHEMA_REFUSALS.items()
        for flag, message in cases
    ],
)
def test_schema_rejects_typos_wrong_types_and_wrong_values(flag: str, message: str) -> None:
    error = template_error("--set", flag)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


# --- rendered objects --------------------------------------------------------------------------


def test_labels_on_every_object_and_pod() -> None:
    objects = template("-f", values_file("azure", "gpu"))
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "llm-router", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "llm-router"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "llm-router-0.1.0"
        assert labels["app.kubernetes.io/component"] in {
            "router",
            "llama-cpu",
            "llama-gpu",
            "device-plugin",
            "dcgm-exporter",
        }
        if "template" in obj.get("spec", {}):
            assert obj["spec"]["template"]["metadata"]["labels"] == labels


def test_object_names_are_the_kustomize_names_with_the_release_prefix() -> None:
    names = {name for _, name in by_name(template("-f", values_file("aws", "gpu")))}
    assert names == {
        "demo-llm-router",
        "demo-llm-router-config",
        "demo-cpu-llm-server",
        "demo-cpu-llm-server-ingress",
        "demo-gpu-llm-server",
        "demo-gpu-llm-server-ingress",
        "demo-nvidia-device-plugin",
        "demo-nvidia",
        "demo-dcgm-exporter",
        "demo-llama-cpp",
        "demo-llm-router-dashboard",
    }


def test_long_release_names_are_truncated_to_63_characters() -> None:
    release = "r" * 53  # the longest release name helm accepts
    objects = template("--set", "gpu.enabled=true", release=release)
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and not name.endswith("-"), name
    assert len(by_name(objects)) == len(objects)  # still one name per object of a kind
    # Only the prefix is cut (and a "-" it ends on), so every name keeps what it names.
    cut = template("--set", "gpu.enabled=true", "--set", f"fullnameOverride={'f' * 40}-{'g' * 21}")
    suffixes = {"llm-router", "llm-router-config", "cpu-llm-server", "cpu-llm-server-ingress"}
    names = {o["metadata"]["name"] for o in cut}
    for suffix in suffixes:
        assert any(name.endswith("-" + suffix) and "--" not in name for name in names), suffix
    assert all(len(name) <= 63 and name.startswith("f" * 40) for name in names)


def test_fullname_override_replaces_the_release_prefix() -> None:
    objects = by_name(template("--set", "fullnameOverride=llm"))
    assert ("Deployment", "llm-cpu-llm-server") in objects


def test_no_hard_coded_namespace() -> None:
    objects = template(
        "-f",
        values_file("aws", "gpu"),
        "--set",
        "gpu.devicePlugin.namespace=",
        "--set",
        "observability.dcgmExporter.namespace=",
        namespace="other",
    )
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "other", obj["metadata"]["name"]
    config = by_name(objects)[("ConfigMap", "demo-llm-router-config")]
    urls = [b["url"] for b in yaml.safe_load(config["data"]["router.yaml"])["backends"]]
    assert urls == [
        "http://demo-cpu-llm-server.other.svc.cluster.local:8080",
        "http://demo-gpu-llm-server.other.svc.cluster.local:8080",
    ]
    # Every namespace the templates write comes from a helper or .Release.Namespace.
    for path in (CHART / "templates").iterdir():
        for line in path.read_text().splitlines():
            if re.match(r"\s*namespace:", line):
                assert re.search(
                    r"namespace: \{\{ (\$root\.|\.)Release\.Namespace \}\}$", line
                ) or re.search(
                    r'include "llm-router\.(devicePlugin|dcgmExporter)Namespace"', line
                ), f"{path.name}: {line}"


def test_node_agents_live_in_kube_system_by_default() -> None:
    """As in the Kustomize overlays: a restricted release namespace would refuse their pods
    (hostPath, root), and they are one per cluster, not per release."""
    objects = template("--set", "gpu.enabled=true", namespace="other")
    agents = {"device-plugin", "dcgm-exporter"}
    placed = {
        (o["kind"], o["metadata"]["namespace"])
        for o in objects
        if o["kind"] not in CLUSTER_SCOPED
        and o["metadata"]["labels"]["app.kubernetes.io/component"] in agents
    }
    assert placed == {
        ("DaemonSet", "kube-system"),
        ("Service", "kube-system"),
        ("ServiceMonitor", "kube-system"),
    }
    others = [o for o in objects if o["kind"] not in CLUSTER_SCOPED]
    assert {
        o["metadata"]["namespace"]
        for o in others
        if o["metadata"]["labels"]["app.kubernetes.io/component"] not in agents
    } == {"other"}


def test_device_plugin_namespace_is_a_value() -> None:
    objects = by_name(
        template("-f", values_file("aws", "gpu"), "--set", "gpu.devicePlugin.namespace=kube-system")
    )
    assert objects[("DaemonSet", "demo-nvidia-device-plugin")]["metadata"]["namespace"] == (
        "kube-system"
    )
    assert objects[("Deployment", "demo-gpu-llm-server")]["metadata"]["namespace"] == "llm-server"


EXTRA_TOLERATION = {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_tolerations_merge_the_gpu_taint_the_cloud_spot_taint_and_gpu_tolerations(
    cloud: str, tmp_path: Path
) -> None:
    spot = catalog.CLOUD_FACTS[catalog.CloudName(cloud)].spot_taint
    spot_toleration = (
        [{"key": spot.key, "operator": "Equal", "value": spot.value, "effect": spot.effect}]
        if spot
        else []
    )
    extra = tmp_path / "extra.yaml"
    # The spot toleration given again must not appear twice.
    extra.write_text(yaml.safe_dump({"gpu": {"tolerations": [EXTRA_TOLERATION, *spot_toleration]}}))
    objects = by_name(template("-f", values_file(cloud, "gpu"), "-f", str(extra)))
    expected = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        *spot_toleration,
        EXTRA_TOLERATION,
    ]
    assert pod_spec(objects[("Deployment", "demo-gpu-llm-server")])["tolerations"] == expected
    plugin = objects.get(("DaemonSet", "demo-nvidia-device-plugin"))
    if cloud == "gcp":
        assert plugin is None  # GKE runs its own device plugin
    else:
        assert plugin is not None and pod_spec(plugin)["tolerations"] == expected
    # The CPU tier and the router stay off the GPU nodes.
    for name in ("demo-cpu-llm-server", "demo-llm-router"):
        assert "tolerations" not in pod_spec(objects[("Deployment", name)])


def _gpu_limits(objects: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    found = []
    for obj in objects:
        if "template" not in obj.get("spec", {}):
            continue
        for container in pod_spec(obj)["containers"]:
            for key, value in container.get("resources", {}).get("limits", {}).items():
                if "gpu" in key or key.startswith("nvidia.com/"):
                    found.append((obj["metadata"]["name"], {key: value}))
    return found


@pytest.mark.parametrize("cloud", CLOUDS)
def test_gpu_limits_only_with_gpu_enabled(cloud: str) -> None:
    assert _gpu_limits(template("--set", f"cloud={cloud}")) == []
    assert _gpu_limits(template("-f", values_file(cloud, "cpu"))) == []
    enabled = template(
        "--set", f"cloud={cloud}", "--set", "gpu.enabled=true", "--set", "gpu.count=2"
    )
    assert _gpu_limits(enabled) == [("demo-gpu-llm-server", {"nvidia.com/gpu": 2})]
    renamed = template(
        "--set", "gpu.enabled=true", "--set", "gpu.resourceName=nvidia.com/mig-1g.10gb"
    )
    assert _gpu_limits(renamed) == [("demo-gpu-llm-server", {"nvidia.com/mig-1g.10gb": 1})]


def test_runtime_class_name_only_where_the_cloud_has_the_handler() -> None:
    for cloud in CLOUDS:
        objects = by_name(template("-f", values_file(cloud, "gpu")))
        pod = pod_spec(objects[("Deployment", "demo-gpu-llm-server")])
        assert pod.get("runtimeClassName") == ("demo-nvidia" if cloud == "aws" else None)
        assert objects[("RuntimeClass", "demo-nvidia")]["handler"] == "nvidia"
    off = by_name(
        template("-f", values_file("aws", "gpu"), "--set", "gpu.runtimeClass.enabled=false")
    )
    assert not any(kind == "RuntimeClass" for kind, _ in off)
    assert pod_spec(off[("Deployment", "demo-gpu-llm-server")])["runtimeClassName"] == "nvidia"


def test_device_plugin_follows_the_cloud_unless_forced() -> None:
    def has_plugin(*args: str) -> bool:
        objects = template("--set", "gpu.enabled=true", *args)
        return any(o["metadata"]["name"] == "demo-nvidia-device-plugin" for o in objects)

    assert has_plugin("--set", "cloud=aws") and has_plugin("--set", "cloud=azure")
    assert not has_plugin("--set", "cloud=gcp")
    assert has_plugin("--set", "cloud=gcp", "--set", "gpu.devicePlugin.enabled=true")
    assert not has_plugin("--set", "cloud=aws", "--set", "gpu.devicePlugin.enabled=false")
    assert "DaemonSet" not in {o["kind"] for o in template("--set", "cloud=aws")}


def test_gpu_node_selector_adds_gpu_node_selector_values() -> None:
    objects = by_name(
        template("-f", values_file("gcp", "gpu"), "--set", "gpu.nodeSelector.pool=gpu-a")
    )
    assert pod_spec(objects[("Deployment", "demo-gpu-llm-server")])["nodeSelector"] == {
        "compute": "gpu-enabled",
        "llmctl.dev/accelerator": "nvidia-tesla-t4",
        "pool": "gpu-a",
    }


def test_router_and_cpu_placement_are_values(tmp_path: Path) -> None:
    """router/cpu nodeSelector and tolerations reach their pods as given (what the real-node
    test sets, tests/cluster/test_helm_pods.py), and none set leaves the pods unplaced."""
    toleration = {"key": "pool", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}
    placed = {"nodeSelector": {"pool": "cpu"}, "tolerations": [toleration]}
    values = tmp_path / "placement.yaml"
    values.write_text(yaml.safe_dump({"router": placed, "cpu": placed}))
    objects = by_name(template("-f", str(values)))
    plain = by_name(template())
    for name in ("demo-llm-router", "demo-cpu-llm-server"):
        spec = pod_spec(objects[("Deployment", name)])
        assert (spec["nodeSelector"], spec["tolerations"]) == ({"pool": "cpu"}, [toleration])
        unplaced = pod_spec(plain[("Deployment", name)])
        assert "nodeSelector" not in unplaced and "tolerations" not in unplaced


def test_security_defaults_on_every_container() -> None:
    for obj in template("-f", values_file("azure", "gpu")):
        if "template" not in obj.get("spec", {}):
            continue
        pod = pod_spec(obj)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            if obj["kind"] != "DaemonSet":  # the device plugin runs as root: see its comment
                assert security["runAsNonRoot"] is True
                assert pod["securityContext"]["runAsNonRoot"] is True


def test_router_pods_roll_when_the_backend_table_changes() -> None:
    def checksum(*args: str) -> str:
        router = by_name(template(*args))[("Deployment", "demo-llm-router")]
        value = router["spec"]["template"]["metadata"]["annotations"][
            "llmctl.dev/router-config-sha256"
        ]
        return str(value)

    assert checksum() != checksum("--set", "gpu.enabled=true")


def test_notes_say_how_to_test_the_release() -> None:
    result = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "llm-server",
        "-f",
        values_file("aws", "gpu"),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl --namespace llm-server port-forward svc/demo-llm-router 8080:80" in notes
    assert "llmctl test-inference --url http://127.0.0.1:8080" in notes
    release = "--cloud aws --namespace llm-server --service demo-llm-router"
    assert f"llmctl test-inference {release}" in notes
    # KEDA owns the GPU replicas: a hand-made scale would be undone at its next poll.
    assert "--replicas=1" not in notes
    assert "get scaledobject,hpa,deployment/demo-gpu-llm-server" in notes
    assert "Warning: images.router is the default" in notes
    assert "EKS clusters created at 1.30 or later have no" in notes
    classed = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "-f",
        values_file("aws", "gpu"),
        "--set",
        "cpu.model.storageClassName=gp3",
        "--set",
        "model.storageClassName=gp3",
    )
    assert "StorageClass" not in classed.stdout.split("NOTES:", 1)[1]
    # A local model volume (the GPU tier's default) is an emptyDir: no StorageClass involved.
    local = run_helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "-f",
        values_file("aws", "gpu"),
        "--set",
        "cpu.model.volume=local",
    )
    assert "StorageClass" not in local.stdout.split("NOTES:", 1)[1]
    assert "Named API keys" not in notes


def _model_volume(objects: list[dict[str, Any]], tier: str) -> dict[str, Any]:
    pod = pod_spec(by_name(objects)[("Deployment", f"demo-{tier}-llm-server")])
    volume: dict[str, Any] = {v["name"]: v for v in pod["volumes"]}["models"]
    return volume


def test_model_volume_is_local_or_a_claim_as_values_say() -> None:
    """Issue 30: `model.volume` local is an emptyDir of storageSize on the node's disk,
    ephemeral a generic ephemeral volume; anything else fails the schema."""
    objects = template("-f", values_file("gcp", "gpu"))
    assert _model_volume(objects, "gpu") == {"name": "models", "emptyDir": {"sizeLimit": "10Gi"}}
    assert "ephemeral" in _model_volume(objects, "cpu")
    flipped = template(
        "-f",
        values_file("gcp", "gpu"),
        "--set",
        "model.volume=ephemeral",
        "--set",
        "cpu.model.volume=local",
    )
    claim = _model_volume(flipped, "gpu")["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "10Gi"
    assert _model_volume(flipped, "cpu") == {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}}
    assert "volume" in template_error("--set", "model.volume=nvme")


def test_notes_say_how_to_write_the_named_keys_secret(tmp_path: Path) -> None:
    values = tmp_path / "keys.yaml"
    values.write_text(
        "router:\n  apiKeys:\n    secretName: router-keys\n"
        "    keys: [{name: team-a}, {name: batch, tiers: [cpu]}]\n"
    )
    result = run_helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace",
                      "llm-server", "-f", values_file("aws", "gpu"), "-f", str(values))  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert (
        "kubectl --namespace llm-server create secret generic router-keys "
        "--from-literal=api-keys=team-a:<secret>,batch:<secret>"
    ) in notes


def test_the_charts_cloud_facts_are_the_catalogs(tmp_path: Path) -> None:
    """Render the chart's facts helper through a template added to a copy of the chart."""
    chart = tmp_path / "llm-router"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "facts.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: facts\n"
        'data:\n  facts: {{ include "llm-router.facts" . | toJson }}\n'
    )
    objects = template(chart=chart)
    facts = yaml.safe_load(by_name(objects)[("ConfigMap", "facts")]["data"]["facts"])
    taint = catalog.GPU_TAINT
    assert facts["gpuTaint"] == {"key": taint.key, "value": taint.value, "effect": taint.effect}
    key, value = catalog.GPU_NODE_LABEL_COMPUTE
    assert facts["gpuNodeLabels"] == {key: value}
    assert facts["acceleratorLabel"] == catalog.GPU_NODE_ACCELERATOR_LABEL
    # One set of shutdown numbers for both paths (docs/deploy.md).
    assert facts["shutdown"] == {
        "routerPreStopSeconds": render.ROUTER_PRESTOP_SECONDS,
        "routerDrainDeadlineSeconds": render.ROUTER_DRAIN_DEADLINE_SECONDS,
        "routerDrainMarginSeconds": render.ROUTER_DRAIN_MARGIN_SECONDS,
        "llamaGraceSeconds": render.LLAMA_GRACE_SECONDS,
        "llamaDrainMarginSeconds": render.LLAMA_DRAIN_MARGIN_SECONDS,
    }
    expected = {}
    for cloud, cloud_facts in catalog.CLOUD_FACTS.items():
        spot = cloud_facts.spot_taint
        expected[cloud.value] = {
            "spotTaint": None
            if spot is None
            else {"key": spot.key, "value": spot.value, "effect": spot.effect},
            "nvidiaRuntimeHandler": cloud_facts.nvidia_runtime_handler,
            "needsDevicePlugin": cloud_facts.needs_device_plugin,
            "hostDriverDir": cloud_facts.host_driver_dir,
        }
    assert facts["clouds"] == expected


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_release_namespace_pod_meets_restricted_pod_security(cloud: str) -> None:
    """With the node agents in kube-system (the default), a release namespace that enforces
    `restricted` admits every pod the chart puts there."""
    from tests.manifests.test_deployable import restricted_violations

    objects = template("-f", values_file(cloud, "gpu"))
    pods = [o for o in objects if o["kind"] in {"Deployment", "DaemonSet"}]
    in_release = [o for o in pods if o["metadata"]["namespace"] == NAMESPACE]
    assert {o["metadata"]["name"] for o in in_release} == {
        "demo-llm-router",
        "demo-cpu-llm-server",
        "demo-gpu-llm-server",
    }
    for obj in in_release:
        assert restricted_violations(pod_spec(obj)) == [], obj["metadata"]["name"]


def test_helm_upgrade_leaves_the_gpu_replicas_to_keda() -> None:
    """No `replicas` in the GPU Deployment: helm's three-way merge then never resets KEDA's
    count (a `replicas: 0` would, on every upgrade)."""
    objects = by_name(template("-f", values_file("aws", "gpu")))
    assert "replicas" not in objects[("Deployment", "demo-gpu-llm-server")]["spec"]
    assert objects[("Deployment", "demo-cpu-llm-server")]["spec"]["replicas"] == 2
    assert objects[("ScaledObject", "demo-gpu-llm-server")]["spec"]["minReplicaCount"] == 0


def test_router_grace_period_follows_its_drain_deadline() -> None:
    """preStop, then the router's drain until drainDeadlineSeconds after SIGTERM, then margin."""
    default = by_name(template())[("Deployment", "demo-llm-router")]
    assert pod_spec(default)["terminationGracePeriodSeconds"] == render.ROUTER_GRACE_SECONDS
    longer = by_name(template("--set", "router.limits.drainDeadlineSeconds=120"))
    grace = pod_spec(longer[("Deployment", "demo-llm-router")])["terminationGracePeriodSeconds"]
    assert grace == render.ROUTER_PRESTOP_SECONDS + 120 + render.ROUTER_DRAIN_MARGIN_SECONDS
