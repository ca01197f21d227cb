"""The rendered CPU stack serving from real pods: `clusters/aws/base` applied to the real node
(a real kubelet, containerd and runc; tests/cluster/node.py) with the router image built from
the unchanged Dockerfile, through a Kustomize overlay that changes only what this machine needs
(tests/cluster/real_stack.py says what and why).

One applied stack is shared by every test of this module (a module-scoped fixture), in this
order: pods Ready through their own probes; their user under Pod Security `restricted`;
`llmctl test-inference --cloud` through the kubelet's real port-forward, 20 runs in a row;
Prometheus scraping the router through its Service; a rollout restart of the router under 4
streams; a llama-server pod deleted mid-stream; the CPU tier's cold start from zero, timed per
stage by `llmctl test-inference --cold`. Each test leaves the stack serving for the next."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmctl.config import NAMESPACE
from tests.cluster.controlplane import REPO, ControlPlane
from tests.cluster.kit import delete_namespace, get_json, reset_llmctl_objects, wait_for
from tests.cluster.prometheus import Prometheus
from tests.cluster.real_stack import (
    MODEL,
    POD_USER,
    BuiltImages,
    answers_through_service,
    cold_start_json,
    dump,
    exec_in,
    import_images,
    one_ready_pod,
    pods,
    ready,
    serving_model,
    wait_rollout,
    write_overlay,
)
from tests.support.cli import llmctl_env
from tests.support.range_server import Served

pytestmark = [pytest.mark.e2e, pytest.mark.tools]

ROUTER = "app.kubernetes.io/component=router"
LLAMA = "app.kubernetes.io/component=llama-cpu"
STAGES = [
    "scheduled",
    "fetcher started",
    "model fetched",
    "server started",
    "model loaded",
    "ready",
    "first token",
]
# Each new llama-server pod takes a volume: the first, the one after a deletion, the one from
# zero, and spares for a retried start.
VOLUMES = 8
# On a shared 2-core machine a first pod start (model download and load) can take minutes.
START_TIMEOUT_S = 600.0


@dataclass
class OnNode:
    plane: ControlPlane
    node: Any
    images: BuiltImages
    served: Served
    model_path: str
    model_bytes: int
    kubeconfig: Path
    router_start_s: float
    work: Path
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def on_node(
    control_plane: ControlPlane, real_node: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OnNode]:
    work = tmp_path_factory.mktemp("pods")
    timings: dict[str, float] = {}
    began = time.monotonic()
    images = import_images(real_node)
    timings["images built (cached) and imported"] = time.monotonic() - began
    reset_llmctl_objects(control_plane)
    with serving_model(real_node) as model:
        overlay = write_overlay(
            work / "overlay",
            REPO / "clusters" / "aws" / "base",
            images.router,
            model.url,
            VOLUMES,
            model_sha256=model.sha256,
        )
        t = time.monotonic()
        control_plane.kubectl(
            "apply", "--server-side", "--field-manager=llmctl-tests", "-k", str(overlay)
        )
        try:
            wait_rollout(control_plane, NAMESPACE, "cpu-llm-server", START_TIMEOUT_S)
            wait_rollout(control_plane, NAMESPACE, "llm-router", START_TIMEOUT_S)
            timings["applied to both Deployments rolled out"] = time.monotonic() - t
            t = time.monotonic()
            # The router checks a backend that failed (llama-server still loading when the
            # router started) with a growing backoff (healthCheck.maxBackoffSeconds, 60 s).
            wait_for(
                "the router to answer through its Service",
                lambda: answers_through_service(control_plane, NAMESPACE, "llm-router"),
                START_TIMEOUT_S,
            )
            timings["router answering"] = time.monotonic() - t
            router = pods(control_plane, NAMESPACE, ROUTER)[0]
            stack = OnNode(
                plane=control_plane,
                node=real_node,
                images=images,
                served=model.served,
                model_path=model.path,
                model_bytes=model.size,
                kubeconfig=control_plane.kubeconfig,
                router_start_s=_ready_after_s(router),
                work=work,
                timings=timings,
            )
            print(
                "stack on the real node: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            )
            yield stack
        finally:
            control_plane.kubectl(
                "delete", "-k", str(overlay), "--ignore-not-found", "--wait=false"
            )
            delete_namespace(control_plane, NAMESPACE, timeout_s=300)


def _time(value: str) -> float:
    from llmctl.probe.coldstart import parse_time

    return parse_time(value).timestamp()


def _ready_after_s(pod: dict[str, Any]) -> float:
    """Seconds from the pod's creation to its Ready condition, as the cluster recorded them."""
    ready_at = next(
        c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready"
    )
    return _time(ready_at) - _time(pod["metadata"]["creationTimestamp"])


# --- streams through the kubelet's port-forward ---------------------------------------------


@dataclass
class StreamEnd:
    status: int | None = None
    tokens: int = 0
    done: bool = False  # `data: [DONE]` arrived
    error: dict[str, Any] | None = None  # the router's `data: {"error": ...}` event
    lost: str | None = None  # the connection ended without either
    first_token: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None


def stream_chat(url: str, max_tokens: int, end: StreamEnd, timeout_s: float = 120.0) -> None:
    """One streamed chat completion of exactly `max_tokens` tokens (llama-server's
    `ignore_eos`, which the router passes on), recorded in `end`."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    try:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, timeout=timeout_s
        ) as response:
            end.status = response.status_code
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    end.done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    end.error = event["error"]
                    continue
                end.tokens += 1
                end.first_token.set()
    except httpx.HTTPError as exc:
        end.lost = repr(exc)
    finally:
        end.ended_at = time.monotonic()
        end.first_token.set()


def _forward(stack: OnNode, pod: str) -> Any:
    """llmctl's own port-forward (`test-inference --cloud`) to the router pod's port 8080."""
    from llmctl import kube
    from llmctl.probe import portforward

    api = kube.api_client(str(stack.kubeconfig))
    target = portforward.ForwardTarget(NAMESPACE, "llm-router", pod, 8080)
    return portforward.forward(target, portforward.kube_stream(api, NAMESPACE))


def _single_stream_rate(url: str) -> float:
    """Tokens per second of one stream alone, to size the streams of the tests below."""
    end = StreamEnd()
    started = time.monotonic()
    stream_chat(url, 32, end)
    assert end.done, end
    assert end.ended_at is not None
    return end.tokens / (end.ended_at - started)


# --- the tests ---------------------------------------------------------------------------------


def _model_gets(on_node: OnNode) -> int:
    """GETs of the model (the pod's fetcher asks in ranges, several per download)."""
    return sum(1 for path, _ in on_node.served.requests if path == on_node.model_path)


def test_router_and_llama_pods_are_ready_through_their_own_probes(on_node: OnNode) -> None:
    plane = on_node.plane
    router = pods(plane, NAMESPACE, ROUTER)
    llama = pods(plane, NAMESPACE, LLAMA)
    assert len(router) == 1 and len(llama) == 1, dump(plane, NAMESPACE)
    for pod in (*router, *llama):
        assert ready(pod), dump(plane, NAMESPACE)
        assert pod["spec"]["nodeName"] == on_node.node.name  # the real kubelet runs it
        for status in pod["status"]["containerStatuses"]:
            # started: the startup probe passed; ready: the readiness probe passes.
            assert status["started"] and status["ready"] and status["restartCount"] == 0
            assert status["imageID"]
    (router_status,) = router[0]["status"]["containerStatuses"]
    assert router_status["image"].endswith(on_node.images.router.rpartition("/")[2])
    # The init container downloaded the model from the server on this machine, in full.
    (fetch,) = llama[0]["status"]["initContainerStatuses"]
    assert fetch["name"] == "fetch-model"
    # The stage watcher runs beside the server.
    assert [c["name"] for c in llama[0]["status"]["containerStatuses"]] == [
        "llama-server",
        "stages",
    ]
    assert fetch["state"]["terminated"]["exitCode"] == 0
    assert fetch["image"].endswith(on_node.images.router.rpartition("/")[2])
    assert _model_gets(on_node)  # the pods' fetcher asked the server for the model
    assert on_node.served.body_bytes_sent >= on_node.model_bytes
    log = plane.kubectl("logs", "-n", NAMESPACE, llama[0]["metadata"]["name"], "-c", "fetch-model")
    assert "llmctl-stage stage=fetch " in log and f"to {on_node.model_path}" in log
    # llama-server loaded the fetched file from the pod's own volume.
    size = exec_in(
        plane, NAMESPACE, llama[0]["metadata"]["name"], "llama-server",
        "stat", "-c", "%s %U", on_node.model_path,
    )  # fmt: skip
    assert size.split()[0] == str(on_node.model_bytes)


def test_pods_run_as_their_non_root_user_under_restricted(on_node: OnNode) -> None:
    plane = on_node.plane
    namespace = get_json(plane, "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for selector, container in ((ROUTER, "router"), (LLAMA, "llama-server")):
        pod = pods(plane, NAMESPACE, selector)[0]["metadata"]["name"]
        # PID 1 of the container is the server itself (the entrypoint execs it).
        status = exec_in(plane, NAMESPACE, pod, container, "cat", "/proc/1/status")
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
        assert uids == [str(POD_USER)] * 4 and gids == [str(POD_USER)] * 4, status
        caps = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
        assert int(caps, 16) == 0  # every capability dropped
        # The root filesystem is read-only for real.
        denied = subprocess.run(
            [*_kubectl(plane), "exec", "-n", NAMESPACE, pod, "-c", container, "--",
             "touch", "/app/written"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # The namespace's level is enforced: a pod running as root is refused.
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-pod", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": on_node.images.router}]},
    }
    refused = subprocess.run(
        [*_kubectl(plane), "apply", "--dry-run=server", "-f", "-"],
        input=json.dumps(root_pod), capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr


def _kubectl(plane: ControlPlane) -> list[str]:
    import os
    import shutil

    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
    return [kubectl, f"--kubeconfig={plane.kubeconfig}"]


def test_test_inference_cloud_through_the_kubelets_port_forward_20_runs(on_node: OnNode) -> None:
    """The port-forward kwok relayed failed one run in six under load; the real kubelet's must
    not fail once in 20 runs, each its own `llmctl test-inference --cloud` process."""
    durations = []
    for run in range(20):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "llmctl", "test-inference", "--cloud", "aws",
             "--kubeconfig", str(on_node.kubeconfig), "--model", MODEL, "--max-tokens", "8",
             "--expect-tier", "cpu", "-o", "json"],
            capture_output=True, text=True, env=llmctl_env(), timeout=180,
        )  # fmt: skip
        durations.append(time.monotonic() - started)
        assert done.returncode == 0, f"run {run + 1} of 20 failed:\n{done.stderr}"
        data = json.loads(done.stdout)
        assert data["tiers"] == {"cpu": 1} and data["results"][0]["tier"] == "cpu"
        assert data["url"].startswith("port-forward to service llm-router")
    print(
        f"20 runs of test-inference --cloud: {sum(durations):.1f}s, slowest {max(durations):.1f}s"
    )


def test_prometheus_scrapes_the_router_through_its_service(on_node: OnNode) -> None:
    plane = on_node.plane
    service = get_json(plane, "service", "-n", NAMESPACE, "llm-router")
    address = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    # A completion through the Service (kube-proxy's rules on this machine), so there is a count.
    answer = httpx.post(
        f"http://{address}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=120,
    )
    assert answer.status_code == 200 and answer.headers["x-llm-tier"] == "cpu"
    prometheus = Prometheus(on_node.work, {"llm-router": address}).start()
    try:
        wait_for(
            "Prometheus to scrape the router through its Service",
            lambda: (
                prometheus.query('up{job="llm-router"}') == 1
                and (prometheus.query('sum(llm_router_requests_total{tier="cpu",code="200"})') or 0)
                >= 1
            ),
            60,
        )
    finally:
        prometheus.stop()


def test_rollout_restart_of_the_router_loses_no_stream(on_node: OnNode) -> None:
    """The router pod the streams go through is replaced while they run: its preStop sleep,
    then its drain, let every stream end with [DONE].

    Two streams run back to back, one per llama-server slot, from before the rollout until the
    old pod is seen terminating; those in flight then must finish through the drain. (Four
    streams sized from a measured rate once all ended before the old pod was stopped: how long
    a rollout takes to get there on a loaded machine cannot be predicted, only waited for.)"""
    plane = on_node.plane
    old = one_ready_pod(plane, NAMESPACE, ROUTER, 60)
    with _forward(on_node, old) as url:
        rate = _single_stream_rate(url)
        # A few seconds each, far inside the drain (terminationGracePeriodSeconds 70 less the
        # 5 s preStop), even at half speed with two at once.
        tokens = max(16, int(rate * 0.5 * 4))
        ends: list[StreamEnd] = []
        stop_starting = threading.Event()

        def back_to_back() -> None:
            while not stop_starting.is_set():
                end = StreamEnd()
                ends.append(end)
                stream_chat(url, tokens, end)

        workers = [threading.Thread(target=back_to_back, daemon=True) for _ in range(2)]
        for worker in workers:
            worker.start()
        wait_for("both streams to send a token", lambda: len(ends) >= 2, 60)
        assert ends[0].first_token.wait(60) and ends[1].first_token.wait(60)
        plane.kubectl("rollout", "restart", "-n", NAMESPACE, "deployment/llm-router")

        def terminating() -> bool:
            found = [p for p in pods(plane, NAMESPACE, ROUTER) if p["metadata"]["name"] == old]
            return not found or bool(found[0]["metadata"].get("deletionTimestamp"))

        wait_for(f"router pod {old} to be stopped by the rollout", terminating, 180)
        stop_starting.set()
        in_flight = sum(1 for end in list(ends) if end.ended_at is None)
        for worker in workers:
            worker.join(timeout=150)
    assert in_flight > 0, "no stream was in flight when the rollout stopped the old pod"
    summary = [(e.status, e.tokens, e.done, e.error, e.lost) for e in ends]
    assert all(e.done and e.error is None and e.lost is None for e in ends), summary
    # Every token asked for (the chunks also carry the role and the finish reason).
    assert all(e.tokens >= tokens for e in ends), summary
    wait_rollout(plane, NAMESPACE, "llm-router", START_TIMEOUT_S)
    print(f"rollout restart: {len(ends)}/{len(ends)} streams of {tokens} tokens ended with "
          f"[DONE]; {in_flight} were in flight when the old pod was stopped")  # fmt: skip


def test_a_llama_pod_deleted_mid_stream_ends_it_with_the_documented_error(
    on_node: OnNode,
) -> None:
    """No drain can save a stream whose server is killed (a grace period shorter than the
    preStop, as a GKE spot reclaim): the router ends it with its `stream_broken` error event
    (docs/router.md), at once, not after a timeout."""
    plane = on_node.plane
    router = one_ready_pod(plane, NAMESPACE, ROUTER, START_TIMEOUT_S)
    llama = one_ready_pod(plane, NAMESPACE, LLAMA, START_TIMEOUT_S)
    with _forward(on_node, router) as url:
        rate = _single_stream_rate(url)
        end = StreamEnd()
        tokens = max(256, int(rate * 60))  # far longer than the kill takes
        thread = threading.Thread(target=stream_chat, args=(url, tokens, end), daemon=True)
        thread.start()
        assert end.first_token.wait(60) and end.lost is None, end
        deleted = time.monotonic()
        plane.kubectl("delete", "pod", "-n", NAMESPACE, llama, "--grace-period=1", "--wait=false")
        thread.join(timeout=90)
    assert end.ended_at is not None, "the stream hung after its llama-server pod was killed"
    assert not end.done and end.tokens < tokens
    assert end.error is not None and end.error.get("code") == "stream_broken", end
    took = end.ended_at - deleted
    assert took < 30, f"the stream ended {took:.1f}s after the delete"
    print(f"llama-server pod killed mid-stream: error event after {took:.1f}s, {end.tokens} tokens")
    wait_rollout(plane, NAMESPACE, "cpu-llm-server", START_TIMEOUT_S)


def test_cold_start_of_the_cpu_tier_from_zero(on_node: OnNode, tmp_path: Path) -> None:
    """`llmctl test-inference --cold cpu`: the Deployment 1 -> 0 -> 1, each stage of the new
    pod's start read from its own records, then the first token through the router. Printed,
    and written to a JSON file ($LLMCTL_COLD_START_JSON, else the test's tmp dir)."""
    import os

    plane = on_node.plane
    wait_rollout(plane, NAMESPACE, "cpu-llm-server", START_TIMEOUT_S)
    fetched_before = _model_gets(on_node)
    done = subprocess.run(
        [sys.executable, "-m", "llmctl", "test-inference", "--cloud", "aws",
         "--kubeconfig", str(on_node.kubeconfig), "--cold", "cpu", "--model", MODEL,
         "--max-tokens", "8", "--cold-timeout", str(int(START_TIMEOUT_S)), "-o", "json"],
        capture_output=True, text=True, env=llmctl_env(), timeout=START_TIMEOUT_S + 120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + dump(plane, NAMESPACE)
    data = json.loads(done.stdout)
    cold = data["coldStart"]
    assert [s["name"] for s in cold["stages"]] == STAGES
    assert all(s["seconds"] >= 0 for s in cold["stages"])
    assert cold["sumSeconds"] == pytest.approx(sum(s["seconds"] for s in cold["stages"]))
    assert cold["node"] == on_node.node.name and cold["deployment"] == "cpu-llm-server"
    assert data["results"][0]["tier"] == "cpu" and data["passed"]
    # A new pod, so a new volume, so the model was downloaded again.
    assert _model_gets(on_node) > fetched_before
    # Scaled back to the count it had.
    deployment = get_json(plane, "deployment", "-n", NAMESPACE, "cpu-llm-server")
    assert deployment["spec"]["replicas"] == 1
    # Where "first token" went: when each router pod logged the backend ready (its own
    # health check), and the answering request's own time to first token.
    from llmctl.probe.coldstart import parse_time

    ready_at = parse_time(next(s["endedAt"] for s in cold["stages"] if s["name"] == "ready"))
    router_saw = []
    for router in pods(plane, NAMESPACE, ROUTER):
        log = plane.kubectl("logs", "-n", NAMESPACE, router["metadata"]["name"], "--timestamps")
        seen = [
            parse_time(line.split(" ", 1)[0])
            for line in log.splitlines()
            if "is ready" in line and "/cpu" in line
        ]
        after = [t for t in seen if t >= ready_at]
        if after:
            router_saw.append(round((after[0] - ready_at).total_seconds(), 3))
    cold["routerSawReadyAfterS"] = router_saw
    cold["firstAnswer"] = data["results"][0]
    out = Path(os.environ.get("LLMCTL_COLD_START_JSON") or tmp_path / "cold-start.json")
    cold_start_json(out, cold)
    width = max(len(s["name"]) for s in cold["stages"])
    lines = [
        f"  {s['name']:<{width}}  {s['seconds']:7.2f} s  {s['source']}" for s in cold["stages"]
    ]
    print(
        "cold start of cpu-llm-server, 0 -> 1 (pod "
        + cold["pod"]
        + "):\n"
        + "\n".join(lines)
        + f"\n  {'sum':<{width}}  {cold['sumSeconds']:7.2f} s\n"
        + f"  {'wall':<{width}}  {cold['wallSeconds']:7.2f} s  (llmctl's clock)\n"
        + f"  router pods logged the backend ready {router_saw} s after Ready; the answer's"
        + f" own time to first token {data['results'][0]['ttftSeconds']} s\n"
        + f"written to {out}"
    )


def test_prometheus_scrapes_the_stages_of_a_llama_pod(on_node: OnNode) -> None:
    """Issue 30: each llama pod's start-up stages, served by its stage watcher (a container
    beside llama-server, in the router image) on the pod's `stages` port, which the PodMonitor
    names; a real Prometheus scrapes the pod's IP here (the node's bridge), and the same
    figures are in the watcher's and the fetcher's logs."""
    from llmctl.modelstore import stages

    plane = on_node.plane
    name = one_ready_pod(plane, NAMESPACE, LLAMA, START_TIMEOUT_S)
    pod = get_json(plane, "pod", "-n", NAMESPACE, name)
    ip = pod["status"]["podIP"]
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "stages")
    port = sidecar["ports"][0]["containerPort"]
    prometheus = Prometheus(on_node.work, {"llama-stages": f"{ip}:{port}"}).start()
    try:
        first = wait_for(
            "Prometheus to scrape the pod's first_ready stage",
            lambda: prometheus.query('llmctl_pod_stage_seconds{stage="first_ready"}'),
            60,
        )
        fetch = prometheus.query('llmctl_pod_stage_seconds{stage="fetch"}')
        load = prometheus.query('llmctl_pod_stage_seconds{stage="load"}')
        fetched = prometheus.query("llmctl_model_fetch_bytes")
        rate = prometheus.query("llmctl_model_fetch_megabytes_per_second")
        image_start = prometheus.query('llmctl_pod_stage_seconds{stage="image_start"}')
    finally:
        prometheus.stop()
    assert fetch is not None and load is not None and image_start is not None
    assert first == pytest.approx(fetch + load, abs=0.002) and load > 0
    assert fetched == on_node.model_bytes and rate is not None and rate > 0
    logged = {}
    for container in ("fetch-model", "stages"):
        log = plane.kubectl("logs", "-n", NAMESPACE, name, "-c", container)
        for line in log.splitlines():
            if line.startswith(stages.PREFIX):
                fields = stages.parse_stage_line(line)
                logged[fields["stage"]] = float(fields["seconds"])
    assert set(logged) == {"image_start", "fetch", "load", "first_ready"}
    assert logged["load"] == pytest.approx(load, abs=0.001)
    print(
        f"stages of pod {name} as Prometheus scraped them: "
        + ", ".join(f"{k} {v:.3f}s" for k, v in logged.items())
        + f"; {fetched:.0f} bytes at {rate:.1f} MB/s"
    )


def test_a_local_model_volume_serves_from_the_real_node(on_node: OnNode) -> None:
    """Issue 30: `model.volume: local` (the GPU tier's default, here on the CPU tier, since the
    real node has no GPU) renders the model volume as an emptyDir on the node's own disk; the
    Deployment switched to it rolls out a new pod that fetches into it (a fresh, empty volume:
    the model is downloaded again), checks it, serves, and the kubelet puts it under its own
    pods directory, not on a PersistentVolume. Runs last: the stack keeps serving after it."""
    from llmctl.catalog import CloudName
    from llmctl.config import load_stack, parse_set_flags
    from llmctl.manifests.render import cpu_tier

    plane = on_node.plane
    stack = load_stack(env={}, flags=parse_set_flags(["cpu.model.volume=local"])).stack
    rendered = next(v for v in cpu_tier(stack, CloudName.AWS)["volumes"] if v["name"] == "models")
    assert rendered == {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}}
    deployment = get_json(plane, "deployment", "-n", NAMESPACE, "cpu-llm-server")
    names = [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]]
    fetched_before = _model_gets(on_node)
    patch = [
        {"op": "replace", "path": f"/spec/template/spec/volumes/{names.index('models')}",
         "value": rendered},
    ]  # fmt: skip
    plane.kubectl(
        "patch", "deployment", "cpu-llm-server", "-n", NAMESPACE, "--type=json",
        "-p", json.dumps(patch),
    )  # fmt: skip
    wait_rollout(plane, NAMESPACE, "cpu-llm-server", START_TIMEOUT_S)
    name = one_ready_pod(plane, NAMESPACE, LLAMA, START_TIMEOUT_S)
    pod = get_json(plane, "pod", "-n", NAMESPACE, name)
    models = next(v for v in pod["spec"]["volumes"] if v["name"] == "models")
    assert models == rendered
    assert _model_gets(on_node) > fetched_before  # a new, empty volume: fetched again
    size = exec_in(
        plane, NAMESPACE, name, "llama-server", "stat", "-c", "%s", on_node.model_path
    )  # fmt: skip
    assert size.strip() == str(on_node.model_bytes)
    # The emptyDir lives in the kubelet's root (its ephemeral storage), on the node's disk.
    volume = (
        on_node.node.state / "kubelet" / "pods" / pod["metadata"]["uid"] / "volumes"
        / "kubernetes.io~empty-dir" / "models" / Path(on_node.model_path).name
    )  # fmt: skip
    assert volume.stat().st_size == on_node.model_bytes
    wait_for(
        "the router to answer through its Service",
        lambda: answers_through_service(plane, NAMESPACE, "llm-router"),
        START_TIMEOUT_S,
    )
