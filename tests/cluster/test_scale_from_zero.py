"""Scale from zero, end to end, with every piece real: kwok GPU nodes shaped as `llmctl gpu
enable` makes them, the GPU overlay applied to a real API server, the GPU Deployment at 0; the
router (`llmctl router serve`, configured from the overlay's own ConfigMap) in front of a real CPU
llama-server; a request for the GPU model answered by the CPU tier (`x-llm-tier: cpu-fallback`);
Prometheus scraping the router; the KEDA operator reading the overlay's own ScaledObject query
and scaling the GPU Deployment to 1; the scheduler placing its pod on the GPU node and nowhere
else; and, after the cooldown, KEDA scaling it back to 0. Each step's time is printed.

What the test changes in the rendered overlay, and why: the ScaledObject's Prometheus address
(KEDA runs on this machine, not in the cluster, so `prometheus-operated.monitoring.svc` is
127.0.0.1 here), its polling interval and cooldown (seconds instead of minutes), and the
router's backend URLs (the servers run on loopback)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import (
    cpu_node,
    delete_namespace,
    ensure_nodes_ready,
    get_json,
    gpu_node,
    only_these_gpu_nodes,
    provide_volumes,
    reset_llmctl_objects,
    wait_for,
)
from tests.cluster.prometheus import Prometheus
from tests.support.gguf_models import write_llama_gguf
from tests.support.hpa import desired_replicas, targets_of_hpa
from tests.support.llama import LlamaServer, free_port
from tests.support.router import RouterProcess

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

GPU_DEPLOYMENT = "gpu-llm-server"
COOLDOWN_S = 5


@dataclass
class Steps:
    """Wall-clock time of each step, printed as the test goes and at the end."""

    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    done: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, what: str) -> None:
        now = time.monotonic()
        self.done.append((what, now - self.last))
        print(f"[scale-from-zero] {what}: {now - self.last:.1f}s (at {now - self.started:.1f}s)")
        self.last = now

    def report(self) -> str:
        return "\n".join(f"  {what:<58} {secs:6.1f}s" for what, secs in self.done)


def rendered_overlay(plane: ControlPlane, repo: Path, cloud: CloudName) -> list[dict[str, Any]]:
    out = plane.kubectl("kustomize", str(repo / "clusters" / cloud.value / "overlays" / "gpu"))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def for_this_machine(objects: list[dict[str, Any]], prometheus_url: str) -> list[dict[str, Any]]:
    """The overlay with KEDA pointed at the local Prometheus and its timings in seconds."""
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            obj["spec"]["pollingInterval"] = 1
            obj["spec"]["cooldownPeriod"] = COOLDOWN_S
            for trigger in obj["spec"]["triggers"]:
                trigger["metadata"]["serverAddress"] = prometheus_url
    return objects


def router_config_from(objects: list[dict[str, Any]], urls: dict[str, str]) -> dict[str, Any]:
    """The router.yaml the overlay's ConfigMap holds, with loopback backend URLs."""
    configmap = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "llm-router-config"
    )
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["router.yaml"])
    for backend in config["backends"]:
        backend["url"] = urls[backend["tier"]]
    config["healthCheck"] = {"intervalSeconds": 0.2, "maxBackoffSeconds": 0.5}
    return config


def apply(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    plane.kubectl("apply", "--server-side", "--field-manager=kubectl", "-f", "-", input_text=doc)


def replicas(plane: ControlPlane) -> int:
    return int(get_json(plane, "deployment", "-n", NAMESPACE, GPU_DEPLOYMENT)["spec"]["replicas"])


def gpu_pods(plane: ControlPlane) -> list[dict[str, Any]]:
    pods = get_json(
        plane, "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={GPU_DEPLOYMENT}"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def keda_hpa(plane: ControlPlane) -> dict[str, Any]:
    """The HorizontalPodAutoscaler the KEDA operator made from the applied ScaledObject."""

    def made() -> str | None:
        status = get_json(plane, "scaledobject", "-n", NAMESPACE, GPU_DEPLOYMENT).get("status", {})
        name: str | None = status.get("hpaName")
        return name

    return get_json(plane, "hpa", "-n", NAMESPACE, wait_for("KEDA to make its HPA", made, 60))


def assert_one_busy_stream_buys_one_gpu(plane: ControlPlane) -> None:
    """Issue 28: the real HPA's metrics, read with the HPA's own arithmetic (tests/support/
    hpa.py): one replica running one stream, its GPU 100% busy, asks for one replica."""
    hpa = keda_hpa(plane)
    scaled = get_json(plane, "scaledobject", "-n", NAMESPACE, GPU_DEPLOYMENT)
    usage = {}
    for target in targets_of_hpa(hpa):
        index = int(target.name.split("-", 1)[0].removeprefix("s"))
        query = scaled["spec"]["triggers"][index]["metadata"]["query"]
        # The demand query reads 1 for one stream (tests/manifests/test_scaling.py checks that
        # with promtool); a utilisation query would read the GPU's 100%.
        usage[target.name] = 1.0 if "llm_router_tier_demand" in query else 100.0
    wanted = desired_replicas(
        1, targets_of_hpa(hpa), usage, hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    )
    assert wanted == 1, f"one busy stream: the HPA {hpa['metadata']['name']} wants {wanted}"


@pytest.fixture
def workdir(tmp_path: Path, control_plane: ControlPlane) -> Iterator[Path]:
    volumes: list[str] = []
    yield tmp_path
    control_plane.kubectl("delete", "scaledobject", "-n", NAMESPACE, "--all", "--ignore-not-found")
    delete_namespace(control_plane, NAMESPACE)
    volumes = [
        v["metadata"]["name"]
        for v in get_json(control_plane, "pv")["items"]
        if v["metadata"]["name"].startswith(f"pv-{NAMESPACE}-")
    ]
    if volumes:
        control_plane.kubectl("delete", "pv", *volumes, "--ignore-not-found")


@pytest.mark.parametrize("cloud", list(CloudName))
def test_gpu_tier_scales_from_zero_and_back(
    cloud: CloudName, control_plane: ControlPlane, workdir: Path, repo: Path
) -> None:
    """Each cloud's overlay with that cloud's GPU node: its own node selector, tolerations
    (AKS's spot taint among them) and demand query must bring the pod up there."""
    reset_llmctl_objects(control_plane)
    steps = Steps()
    gpu_name = f"gpu-{cloud.value}-1"
    ensure_nodes_ready(control_plane, [cpu_node("cpu-1"), cpu_node("cpu-2")])
    # Only this cloud's GPU node: a cluster holds one cloud's nodes.
    only_these_gpu_nodes(control_plane, [gpu_node(cloud, gpu_name)])
    steps.mark("kwok nodes Ready (2 CPU, 1 GPU as `gpu enable` makes it)")

    objects = rendered_overlay(control_plane, repo, cloud)
    gguf = write_llama_gguf(workdir / "tiny.gguf")
    dead_gpu = f"http://127.0.0.1:{free_port()}"  # the GPU tier is at zero: nothing listens
    cpu = LlamaServer(gguf, "tinyllama-1.1b-chat", workdir).start()
    router = prometheus = None
    try:
        router = RouterProcess(
            router_config_from(objects, {"cpu": cpu.url, "gpu": dead_gpu}), workdir
        ).start()
        prometheus = Prometheus(
            workdir, {"llm-router": f"127.0.0.1:{router.port}"}, labels={"namespace": NAMESPACE}
        ).start()
        steps.mark("CPU llama-server, router and Prometheus up")

        objects = for_this_machine(objects, prometheus.url)
        apply(control_plane, objects)
        provide_volumes(control_plane, f"pv-{NAMESPACE}", 6)
        # The manifest leaves the count to KEDA (the API server's default is 1): KEDA, finding
        # no demand, takes the tier to 0 at its first poll.
        wait_for("KEDA to take the idle GPU tier to 0", lambda: replicas(control_plane) == 0, 90)
        wait_for("the GPU pods to be gone", lambda: not gpu_pods(control_plane), 60)

        def keda_ready() -> bool:
            status = get_json(control_plane, "scaledobject", "-n", NAMESPACE, GPU_DEPLOYMENT)
            conditions = {
                c["type"]: c["status"] for c in status.get("status", {}).get("conditions", [])
            }
            return conditions.get("Ready") == "True" and conditions.get("Active") == "False"

        wait_for("KEDA to take the ScaledObject (Ready, not Active)", keda_ready, 90)
        assert replicas(control_plane) == 0 and not gpu_pods(control_plane)
        steps.mark("overlay applied; KEDA Ready, GPU Deployment at 0")
        assert_one_busy_stream_buys_one_gpu(control_plane)

        # As in a cluster, Prometheus has scraped the idle router before the first request: the
        # counter's step from 0 to 1 is what `increase()` sees.
        wait_for(
            "Prometheus to scrape the idle router",
            lambda: (
                prometheus.query(
                    f'llm_router_tier_requests_total{{tier="gpu", cloud="{cloud.value}"}}'
                )
                == 0
            ),
            60,
        )
        response = httpx.post(
            router.url + "/v1/chat/completions",
            json={"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 4},
            timeout=60,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["x-llm-tier"] == "cpu-fallback"
        steps.mark("GPU-model request answered by the CPU tier (cpu-fallback)")

        scaled = get_json(control_plane, "scaledobject", "-n", NAMESPACE, GPU_DEPLOYMENT)
        query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        wait_for("Prometheus to see GPU demand", lambda: (prometheus.query(query) or 0) > 0, 60)
        steps.mark("Prometheus scraped the router: the ScaledObject's query > 0")

        wait_for("KEDA to scale the GPU Deployment to 1", lambda: replicas(control_plane) == 1, 90)
        steps.mark("KEDA scaled the GPU Deployment 0 -> 1")

        def scheduled() -> dict[str, Any] | None:
            pods = gpu_pods(control_plane)
            return pods[0] if pods and pods[0]["spec"].get("nodeName") else None

        pod = wait_for("the scheduler to place the GPU pod", scheduled, 60)
        assert pod["spec"]["nodeName"] == gpu_name
        steps.mark(f"scheduler placed the GPU pod on {gpu_name}")

        def running() -> bool:
            pods = gpu_pods(control_plane)
            return bool(pods) and pods[0]["status"].get("phase") == "Running"

        wait_for("the GPU pod to run (kwok)", running, 60)
        uid = gpu_pods(control_plane)[0]["metadata"]["uid"]
        steps.mark("GPU pod Running on the GPU node")

        # Re-applying the overlay while KEDA holds the tier at 1 must leave it there.
        try:
            apply(control_plane, objects)
            reapplied = "applied"
        except RuntimeError as exc:  # server-side apply: a conflict with keda-operator
            reapplied = str(exc).splitlines()[1] if "\n" in str(exc) else str(exc)
        after_reapply = replicas(control_plane)
        survivors = [p["metadata"]["uid"] for p in gpu_pods(control_plane)]
        steps.mark(f"re-applied the overlay ({reapplied[:60]}): replicas {after_reapply}")

        # Demand ends: the counter's 1-minute window passes, then the cooldown.
        wait_for("KEDA to scale the GPU Deployment back to 0",
                 lambda: replicas(control_plane) == 0, 180)  # fmt: skip
        steps.mark(f"no demand for 1 min + {COOLDOWN_S}s cooldown: KEDA scaled 1 -> 0")
        wait_for("the GPU pod to be gone", lambda: not gpu_pods(control_plane), 60)
        steps.mark("GPU pod deleted")
        print(f"[scale-from-zero {cloud.value}] steps:\n" + steps.report())

        assert reapplied == "applied" and after_reapply == 1 and survivors == [uid], (
            f"re-applying the overlay while KEDA held the GPU tier at 1: {reapplied}; "
            f"replicas {after_reapply}, pods {survivors} (was {uid})"
        )
    finally:
        if prometheus is not None:
            prometheus.stop()
        if router is not None:
            router.stop()
        cpu.stop()


def alert_rules_for_this_machine(objects: list[dict[str, Any]], path: Path) -> Path:
    """The overlay's own PrometheusRule as a rules file, with the scaler alert's `for` in
    seconds (promtool checks the real 2 minutes: tests/data/alerts-test.yaml)."""
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    spec = rule["spec"]
    for group in spec["groups"]:
        for alert in group["rules"]:
            if alert.get("alert") == "GPUScalerMetricsUnavailable":
                alert["for"] = "5s"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_gpu_tier_fails_closed_when_prometheus_stops(
    control_plane: ControlPlane, workdir: Path, repo: Path
) -> None:
    """Issue 27: the GPU tier is up (one request woke it), then the Prometheus KEDA reads stops.
    The rendered ScaledObject's fallback takes the tier to 0 after the cooldown, and it stays
    there after more failed polls than KEDA's fallback threshold would allow (KEDA v2.21 counts
    an active fallback as an active trigger, which would wake it again). A second Prometheus,
    the one that scrapes KEDA's own metrics and evaluates the overlay's rules, fires
    GPUScalerMetricsUnavailable."""
    cloud = CloudName.AWS
    reset_llmctl_objects(control_plane)
    steps = Steps()
    ensure_nodes_ready(control_plane, [cpu_node("cpu-1"), cpu_node("cpu-2")])
    only_these_gpu_nodes(control_plane, [gpu_node(cloud, "gpu-aws-1")])
    objects = rendered_overlay(control_plane, repo, cloud)
    gguf = write_llama_gguf(workdir / "tiny.gguf")
    cpu = LlamaServer(gguf, "tinyllama-1.1b-chat", workdir).start()
    router = prometheus = alerting = None
    try:
        router = RouterProcess(
            router_config_from(objects, {"cpu": cpu.url, "gpu": f"http://127.0.0.1:{free_port()}"}),
            workdir,
        ).start()
        prometheus = Prometheus(
            workdir, {"llm-router": f"127.0.0.1:{router.port}"}, labels={"namespace": NAMESPACE}
        ).start()
        rules = alert_rules_for_this_machine(objects, workdir / "rules.yaml")
        keda_metrics = f"127.0.0.1:{control_plane.ports['keda-metrics']}"
        alerting = Prometheus(workdir, {"keda-operator": keda_metrics}, rule_files=[rules]).start()
        objects = for_this_machine(objects, prometheus.url)
        apply(control_plane, objects)
        provide_volumes(control_plane, f"pv-{NAMESPACE}", 6)
        wait_for("KEDA to take the idle GPU tier to 0", lambda: replicas(control_plane) == 0, 90)
        steps.mark("overlay applied, KEDA took the GPU tier to 0")

        wait_for(
            "Prometheus to scrape the idle router",
            lambda: prometheus.query('llm_router_tier_requests_total{tier="gpu"}') == 0,
            60,
        )
        response = httpx.post(
            router.url + "/v1/chat/completions",
            json={"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 4},
            timeout=60,
        )  # fmt: skip
        assert response.headers["x-llm-tier"] == "cpu-fallback", response.text
        wait_for("KEDA to scale the GPU Deployment to 1", lambda: replicas(control_plane) == 1, 90)
        steps.mark("a GPU request woke the tier: replicas 1")

        prometheus.stop()
        prometheus = None
        wait_for(
            "the GPU tier to go to 0 with its metric unreadable",
            lambda: replicas(control_plane) == 0,
            90,
        )
        steps.mark(f"Prometheus stopped: KEDA took the tier to 0 ({COOLDOWN_S}s cooldown)")

        def failures() -> int | None:
            status = get_json(control_plane, "scaledobject", "-n", NAMESPACE, GPU_DEPLOYMENT)
            health = status.get("status", {}).get("health", {})
            counts = [h.get("numberOfFailures", 0) for h in health.values()]
            return max(counts) if counts and max(counts) > 5 else None

        seen = wait_for("KEDA to count more than 5 failed polls", failures, 60)
        assert replicas(control_plane) == 0, "the GPU tier woke while KEDA could not read demand"
        steps.mark(f"{seen} failed polls later the tier is still at 0")

        def alert() -> dict[str, Any] | None:
            assert alerting is not None
            return next(
                (a for a in alerting.firing()
                 if a["labels"]["alertname"] == "GPUScalerMetricsUnavailable"),
                None,
            )  # fmt: skip

        fired = wait_for("GPUScalerMetricsUnavailable to fire", alert, 120)
        assert fired["labels"]["namespace"] == NAMESPACE
        assert fired["labels"]["scaledObject"] == GPU_DEPLOYMENT
        assert replicas(control_plane) == 0
        steps.mark("GPUScalerMetricsUnavailable firing")
        print("[fail-closed] steps:\n" + steps.report())
    finally:
        for process in (alerting, prometheus, router):
            if process is not None:
                process.stop()
        cpu.stop()


def test_a_request_that_waits_is_served_by_the_gpu_keda_wakes(
    control_plane: ControlPlane, workdir: Path, repo: Path
) -> None:
    """Issue 31: with the GPU tier at 0, a request sent with `x-llm-gpu-wait` waits; it alone
    is the demand that makes KEDA scale the GPU Deployment to 1, and it is answered by the GPU
    (`x-llm-tier: gpu`) once that backend is ready. A request without the header, sent while
    the first one waits, is answered by the CPU at once (`cpu-fallback`).

    Real: kube-apiserver, scheduler, controller-manager, the KEDA operator reading the aws
    overlay's own ScaledObject, Prometheus scraping the router, the router (`llmctl router
    serve`, configured from the overlay's ConfigMap plus a `gpuWait` section) and a CPU
    llama-server. Stands in: kwok plays the GPU node's kubelet, so the GPU pod is Running but no
    container runs; when kwok reports it Running, the test starts a real llama-server (serving
    the GPU model's name) on the loopback address the router's GPU backend points at, as the
    pod's container would listen behind its Service."""
    cloud = CloudName.AWS
    reset_llmctl_objects(control_plane)
    steps = Steps()
    ensure_nodes_ready(control_plane, [cpu_node("cpu-1"), cpu_node("cpu-2")])
    only_these_gpu_nodes(control_plane, [gpu_node(cloud, "gpu-aws-1")])
    objects = rendered_overlay(control_plane, repo, cloud)
    gguf = write_llama_gguf(workdir / "tiny.gguf")
    cpu = LlamaServer(gguf, "tinyllama-1.1b-chat", workdir).start()
    gpu = LlamaServer(gguf, "llama-2-7b-chat", workdir)  # started when its pod runs
    router = prometheus = None
    try:
        config = router_config_from(objects, {"cpu": cpu.url, "gpu": gpu.url})
        config["gpuWait"] = {"maxSeconds": 300, "maxDepth": 8}
        router = RouterProcess(config, workdir).start()
        prometheus = Prometheus(
            workdir, {"llm-router": f"127.0.0.1:{router.port}"}, labels={"namespace": NAMESPACE}
        ).start()
        objects = for_this_machine(objects, prometheus.url)
        apply(control_plane, objects)
        provide_volumes(control_plane, f"pv-{NAMESPACE}", 6)
        wait_for("KEDA to take the idle GPU tier to 0", lambda: replicas(control_plane) == 0, 90)
        wait_for("the GPU pods to be gone", lambda: not gpu_pods(control_plane), 60)
        wait_for(
            "Prometheus to scrape the idle router",
            lambda: prometheus.query('llm_router_tier_requests_total{tier="gpu"}') == 0,
            60,
        )
        steps.mark("overlay applied, GPU tier at 0, Prometheus scraped the idle router")

        body = {"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4}  # fmt: skip
        answers: dict[str, httpx.Response] = {}
        sent = time.monotonic()

        def wait_for_the_gpu() -> None:
            answers["waiter"] = httpx.post(
                router.url + "/v1/chat/completions",
                json=body,
                headers={"x-llm-gpu-wait": "300"},
                timeout=330,
            )

        waiter = threading.Thread(target=wait_for_the_gpu, daemon=True)
        waiter.start()

        def router_gauge(name: str) -> float:
            assert router is not None
            text = httpx.get(router.url + "/metrics", timeout=10).text
            line = next(x for x in text.splitlines() if x.startswith(name + "{"))
            return float(line.rsplit(" ", 1)[1])

        wait_for("the request to wait", lambda: router_gauge("llm_router_gpu_waiting") == 1, 30)
        steps.mark("a request with x-llm-gpu-wait: 300 waits (GPU demand 1)")
        wait_for("KEDA to scale the GPU Deployment to 1", lambda: replicas(control_plane) == 1, 120)
        assert "waiter" not in answers
        steps.mark("KEDA scaled the GPU Deployment 0 -> 1 on the waiting request alone")

        def running() -> bool:
            pods = gpu_pods(control_plane)
            return bool(pods) and pods[0]["status"].get("phase") == "Running"

        wait_for("the GPU pod to run (kwok)", running, 90)
        steps.mark("GPU pod Running on the GPU node (kwok)")

        began = time.monotonic()
        plain = httpx.post(router.url + "/v1/chat/completions", json=body, timeout=60)
        plain_seconds = time.monotonic() - began
        assert plain.status_code == 200, plain.text
        assert plain.headers["x-llm-tier"] == "cpu-fallback"
        assert "waiter" not in answers
        steps.mark(f"a request without the header: cpu-fallback in {plain_seconds:.2f}s")

        gpu.start()  # the GPU pod's container listening (see the docstring)
        waiter.join(120)
        waited = time.monotonic() - sent
        answer = answers["waiter"]
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-llm-tier"] == "gpu"
        assert answer.headers["x-llm-backend"] == "aws/gpu"
        steps.mark(f"the waiting request answered by the GPU after {waited:.1f}s")
        assert plain_seconds < waited
        print("[gpu-wait] steps:\n" + steps.report())
    finally:
        for process in (prometheus, router):
            if process is not None:
                process.stop()
        gpu.stop()
        cpu.stop()
