"""The chart's scaling and monitoring objects come from the same files as the overlays'."""

from __future__ import annotations

import json

import yaml

from tests.charts.helm import CHART, by_name, template, values_file

OBSERVABILITY = {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_alerts_and_dashboard_are_the_shared_files() -> None:
    objects = by_name(template("-f", values_file("azure", "gpu")))
    rules = objects[("PrometheusRule", "demo-llm-router")]["spec"]
    assert rules == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    board = objects[("ConfigMap", "demo-llm-router-dashboard")]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["llm-router.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text()
    )


def test_scaling_values_reach_the_scaled_object() -> None:
    objects = by_name(
        template(
            "-f",
            values_file("gcp", "gpu"),
            "--set",
            "gpu.maxReplicas=3",
            "--set",
            "gpu.idleTimeoutSeconds=600",
        )
    )
    spec = objects[("ScaledObject", "demo-gpu-llm-server")]["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 3, 600)
    assert spec["scaleTargetRef"]["name"] == "demo-gpu-llm-server"
    (demand,) = spec["triggers"]
    labels = 'namespace="llm-server", tier="gpu", cloud="gcp"'
    in_flight = f"sum(llm_router_tier_demand{{{labels}}})"
    arrived = f"clamp_max(sum(increase(llm_router_tier_requests_total{{{labels}}}[1m])), 1)"
    assert demand["metadata"]["query"] == f"{in_flight} + clamp_min({arrived} - {in_flight}, 0)"
    assert spec["fallback"] == {"failureThreshold": 2147483647, "replicas": 0}
    bounded = by_name(
        template("-f", values_file("gcp", "gpu"), "--set", "gpu.metricsFailureReplicas=2")
    )[("ScaledObject", "demo-gpu-llm-server")]["spec"]
    assert bounded["fallback"] == {"failureThreshold": 3, "replicas": 2}


def test_observability_can_be_turned_off_and_needs_the_gpu_tier() -> None:
    off = template("-f", values_file("aws", "gpu"), "--set", "observability.enabled=false")
    assert not {o["kind"] for o in off} & OBSERVABILITY
    # Without KEDA the Deployment states gpu.replicas (0), not the API server's default of 1.
    gpu = by_name(off)[("Deployment", "demo-gpu-llm-server")]
    assert gpu["spec"]["replicas"] == 0
    with_keda = by_name(template("-f", values_file("aws", "gpu")))
    assert "replicas" not in with_keda[("Deployment", "demo-gpu-llm-server")]["spec"]
    cpu = template("-f", values_file("aws", "cpu"))
    assert not {o["kind"] for o in cpu} & OBSERVABILITY


def test_dcgm_exporter_on_gke_mounts_the_host_driver() -> None:
    def exporter(cloud: str) -> dict[str, object]:
        objects = by_name(template("-f", values_file(cloud, "gpu")))
        spec: dict[str, object] = objects[("DaemonSet", "demo-dcgm-exporter")]["spec"]["template"][
            "spec"
        ]
        return spec

    gke = exporter("gcp")
    assert any(
        v.get("hostPath", {}).get("path") == "/home/kubernetes/bin/nvidia" for v in gke["volumes"]
    )  # type: ignore[attr-defined]
    assert "runtimeClassName" not in gke
    eks = exporter("aws")
    assert eks["runtimeClassName"] == "demo-nvidia"
    assert all("nvidia" not in str(v) for v in eks["volumes"])  # type: ignore[attr-defined]
