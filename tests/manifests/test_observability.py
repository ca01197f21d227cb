"""Scale-to-zero and observability objects of the GPU overlays, checked with the real promtool."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack
from llmctl.manifests.build import built_objects
from tests.support.kube_schema import validate_strict
from tests.support.tools import require_tool

STACK = Stack()
DATA = Path(__file__).resolve().parents[1] / "data"


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def gpu_objects() -> dict[CloudName, list[dict[str, Any]]]:
    return {cloud: built_objects(STACK, cloud, gpu=True) for cloud in catalog.CLOUDS}


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_scaled_object_scales_gpu_tier_from_zero_on_this_clouds_demand(
    gpu_objects: dict[CloudName, list[dict[str, Any]]], cloud: CloudName
) -> None:
    scaled = _find(gpu_objects[cloud], "ScaledObject", "gpu-llm-server")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gpu-llm-server",
    }
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 2)
    assert scaled["cooldownPeriod"] == 300  # a warm GPU stays 5 minutes
    # One trigger, queueing: GPU utilisation buys a second node for one busy stream (issue 28).
    (demand,) = scaled["triggers"]
    assert demand["type"] == "prometheus"
    labels = f'namespace="llm-server", tier="gpu", cloud="{cloud.value}"'
    in_flight = f"sum(llm_router_tier_demand{{{labels}}})"
    arrived = f"clamp_max(sum(increase(llm_router_tier_requests_total{{{labels}}}[1m])), 1)"
    assert demand["metadata"]["query"] == f"{in_flight} + clamp_min({arrived} - {in_flight}, 0)"
    assert demand["metadata"]["activationThreshold"] == "0"  # one waiting request wakes it
    assert demand["metadata"]["threshold"] == "4"  # llama-server's --parallel
    # Fails closed: a fallback of 0 replicas whose threshold is never reached (issue 27).
    assert scaled["fallback"] == {"failureThreshold": 2**31 - 1, "replicas": 0}


def test_a_metrics_failure_bound_is_keda_fallback_after_three_polls() -> None:
    stack = Stack.model_validate({"gpu": {"metricsFailureReplicas": 1}})
    scaled = _find(built_objects(stack, CloudName.AWS, gpu=True), "ScaledObject", "gpu-llm-server")
    assert scaled["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 1}
    with pytest.raises(ValueError, match="metricsFailureReplicas 3 is above maxReplicas 2"):
        Stack.model_validate({"gpu": {"metricsFailureReplicas": 3}})


def test_scaling_settings_follow_the_config() -> None:
    stack = load_stack(env={"MAX_GPU_REPLICAS": "3"}).stack
    stack = stack.model_copy(
        update={"gpu": stack.gpu.model_copy(update={"idle_timeout_seconds": 900})}
    )
    scaled = _find(built_objects(stack, CloudName.AWS, gpu=True), "ScaledObject", "gpu-llm-server")
    assert (scaled["spec"]["maxReplicaCount"], scaled["spec"]["cooldownPeriod"]) == (3, 900)


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_dcgm_exporter_runs_on_gpu_nodes_only(
    gpu_objects: dict[CloudName, list[dict[str, Any]]], cloud: CloudName
) -> None:
    daemonset = _find(gpu_objects[cloud], "DaemonSet", "dcgm-exporter")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"compute": "gpu-enabled"}
    tolerated = {t["key"] for t in pod["tolerations"]}
    spot = catalog.CLOUD_FACTS[cloud].spot_taint
    assert tolerated == {"nvidia.com/gpu"} | ({spot.key} if spot else set())
    container = pod["containers"][0]
    assert container["image"].startswith("nvcr.io/nvidia/k8s/dcgm-exporter:3.")  # pinned
    assert pod.get("runtimeClassName") == ("nvidia" if cloud is CloudName.AWS else None)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert ("/usr/local/nvidia" in mounts) == (cloud is CloudName.GCP)
    service = _find(gpu_objects[cloud], "Service", "dcgm-exporter")
    monitor = _find(gpu_objects[cloud], "ServiceMonitor", "dcgm-exporter")
    assert service["spec"]["selector"] == monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_router_and_llama_cpp_are_scraped(
    gpu_objects: dict[CloudName, list[dict[str, Any]]],
) -> None:
    objects = gpu_objects[CloudName.AWS]
    router_monitor = _find(objects, "ServiceMonitor", "llm-router")["spec"]
    router_service = _find(objects, "Service", "llm-router")["spec"]
    assert router_monitor["selector"]["matchLabels"] == router_service["selector"]
    assert router_monitor["endpoints"][0]["path"] == "/metrics"
    llama = _find(objects, "PodMonitor", "llama-cpp")["spec"]
    assert llama["selector"]["matchExpressions"][0]["values"] == ["llama-cpu", "llama-gpu"]
    assert all(
        "--metrics"
        in _find(objects, "Deployment", n)["spec"]["template"]["spec"]["containers"][0]["args"]
        for n in ("cpu-llm-server", "gpu-llm-server")
    )
    # Prometheus may reach llama.cpp's port through the NetworkPolicy.
    policy = _find(objects, "NetworkPolicy", "gpu-llm-server-ingress")["spec"]
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in sources
    for kind, name in (
        ("ServiceMonitor", "llm-router"),
        ("PodMonitor", "llama-cpp"),
        ("PrometheusRule", "llm-router"),
    ):
        assert (
            _find(objects, kind, name)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        )


def _rules(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = _find(objects, "PrometheusRule", "llm-router")["spec"]
    return spec


def test_prometheus_rule_carries_every_alert_with_annotations(
    gpu_objects: dict[CloudName, list[dict[str, Any]]],
) -> None:
    rules = [r for g in _rules(gpu_objects[CloudName.AWS])["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert set(alerts) == {
        "GPUHighUtilization",
        "GPUCostAlert",
        "GPUPoolNotScalingToZero",
        "GPUNodeNotScalingDown",
        "GPUNotDetected",
        "GPUScalerMetricsUnavailable",
        "GPUTierNotWaking",
        "GPUMemoryNearFull",
        "LLMHighQueueWait",
        "LLMRequestsFallingBackToCPU",
        "LlamaCppDown",
        "LLMPeerRouterUnreachable",
        "LLMPeerRequestsFailing",
    }
    assert "DCGM_FI_DEV_GPU_UTIL" in alerts["GPUHighUtilization"]["expr"]
    assert (
        "> 90" in alerts["GPUHighUtilization"]["expr"]
        and alerts["GPUHighUtilization"]["for"] == "5m"
    )
    assert 'llm_router_cost_usd_total{tier="gpu"}[24h]' in alerts["GPUCostAlert"]["expr"]
    assert alerts["GPUCostAlert"]["expr"].endswith("> 3")  # reachable by one default replica
    assert alerts["GPUPoolNotScalingToZero"]["for"] == "30m"
    for alert in alerts.values():
        assert alert["annotations"]["summary"] and "Check" in alert["annotations"]["description"]


def test_promtool_checks_and_unit_tests_the_rules(
    gpu_objects: dict[CloudName, list[dict[str, Any]]], tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    # promtool wants a plain rules file: the PrometheusRule's spec, exactly as deployed.
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(_rules(gpu_objects[CloudName.AWS])))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "SUCCESS: 13 rules found" in check.stdout, (
        check.stdout + check.stderr
    )
    tests = yaml.safe_load((DATA / "alerts-test.yaml").read_text())
    tests["rule_files"] = [str(rules_file)]
    test_file = tmp_path / "alerts-test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    unit = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    # Every alert has a case where it fires.
    fired = {
        case["alertname"]
        for t in tests["tests"]
        for case in t["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {
        r["alert"] for g in _rules(gpu_objects[CloudName.AWS])["groups"] for r in g["rules"]
    }


# What kube-state-metrics exports with its default flags (docs/metrics/*/ at v2.x, STABLE, no
# --metric-labels-allowlist): the families the rules read, with the labels they match on.
KSM_DEFAULT_SERIES = {
    "kube_deployment_spec_replicas": {"namespace", "deployment"},
    "kube_deployment_status_replicas": {"namespace", "deployment"},
    "kube_node_spec_taint": {"node", "key", "value", "effect"},
    "kube_node_status_capacity": {"node", "resource", "unit"},
    "kube_node_status_allocatable": {"node", "resource", "unit"},
    "kube_pod_container_resource_requests": {
        "namespace", "pod", "uid", "container", "node", "resource", "unit",
    },
    "kube_pod_start_time": {"namespace", "pod", "uid"},
}  # fmt: skip


def test_rules_read_only_what_a_default_kube_prometheus_stack_exports(
    gpu_objects: dict[CloudName, list[dict[str, Any]]],
) -> None:
    """kube_node_labels carries no label_* unless kube-state-metrics is given an allowlist, so
    an alert keyed on one is silent on a default install (issue 28)."""
    import re

    for group in _rules(gpu_objects[CloudName.AWS])["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            assert "label_" not in expr and "kube_node_labels" not in expr, rule["alert"]
            for family, matchers in re.findall(r"\b(kube_[a-z_]+)\{([^}]*)\}", expr):
                assert family in KSM_DEFAULT_SERIES, (rule["alert"], family)
                used = {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",")}
                assert used <= KSM_DEFAULT_SERIES[family], (rule["alert"], family, used)


def test_promtool_unit_tests_can_fail(
    tmp_path: Path, gpu_objects: dict[CloudName, list[dict[str, Any]]]
) -> None:
    # The same unit tests against a rule with a raised threshold must fail: the tests bite.
    promtool = require_tool("promtool")
    rules = copy.deepcopy(_rules(gpu_objects[CloudName.AWS]))
    rules["groups"][0]["rules"][0]["expr"] = rules["groups"][0]["rules"][0]["expr"].replace(
        "> 90", "> 99"
    )
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    tests = yaml.safe_load((DATA / "alerts-test.yaml").read_text())
    tests["rule_files"] = [str(rules_file)]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    unit = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "t.yaml")], capture_output=True, text=True
    )
    assert unit.returncode != 0 and "GPUHighUtilization" in unit.stdout + unit.stderr


def _dashboard(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = _find(objects, "ConfigMap", "llm-router-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    board: dict[str, Any] = json.loads(config_map["data"]["llm-router.json"])
    return board


def test_dashboard_panels_each_have_a_datasource_and_a_query(
    gpu_objects: dict[CloudName, list[dict[str, Any]]],
) -> None:
    board = _dashboard(gpu_objects[CloudName.AWS])
    titles = [p["title"] for p in board["panels"]]
    for wanted in (
        "GPU utilisation",
        "GPU memory used",
        "Inference latency p50 / p95",
        "Time to first token p50 / p95",
        "Queue depth",
        "Requests per tier",
        "Fallbacks to CPU",
        "Tokens per second",
        "Cost per inference",
        "Cost per day",
        "GPU replicas against demand",
        "Peer routers ready",
        "Requests forwarded to peers",
        "Peer time to first byte p95",
        "Requests received from peers",
    ):
        assert wanted in titles
    for panel in board["panels"]:
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_dashboard_query_parses(
    gpu_objects: dict[CloudName, list[dict[str, Any]]], tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    board = _dashboard(gpu_objects[CloudName.AWS])
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    # promtool parses PromQL only inside rules: wrap each query as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout


def test_keda_queries_parse(
    gpu_objects: dict[CloudName, list[dict[str, Any]]], tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    queries = [
        trigger["metadata"]["query"]
        for objects in gpu_objects.values()
        for trigger in _find(objects, "ScaledObject", "gpu-llm-server")["spec"]["triggers"]
    ]
    rules = {
        "groups": [
            {
                "name": "keda",
                "rules": [{"record": f"keda:query_{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "keda-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in check.stdout, (
        check.stdout + check.stderr
    )


def test_strict_crd_check_rejects_a_typo(
    gpu_objects: dict[CloudName, list[dict[str, Any]]],
) -> None:
    scaled = copy.deepcopy(_find(gpu_objects[CloudName.AWS], "ScaledObject", "gpu-llm-server"))
    validate_strict(scaled)
    scaled["spec"]["minReplicas"] = 0  # KEDA calls it minReplicaCount
    with pytest.raises(AssertionError, match="unknown fields.*spec.minReplicas"):
        validate_strict(scaled)
    monitor = copy.deepcopy(_find(gpu_objects[CloudName.AWS], "ServiceMonitor", "llm-router"))
    monitor["spec"]["endpoints"][0]["port"] = 8080  # must be a port name
    with pytest.raises(ValueError):
        validate_strict(monitor)


def test_cpu_base_needs_no_monitoring_crds() -> None:
    kinds = {o["kind"] for c in catalog.CLOUDS for o in built_objects(STACK, c, gpu=False)}
    assert not kinds & {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
