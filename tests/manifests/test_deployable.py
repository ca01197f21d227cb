"""The deploy review's findings (issue 13), each checked on what both render paths produce:
`built_objects` (what `kubectl kustomize` builds) and, through the parity tests, the chart.

What only a real control plane can show (admission, scheduling, volume binding, KEDA owning
replicas) is said in docs/deploy.md; these tests hold the rendered side of each finding.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack, parse_set_flags
from llmctl.manifests import render
from llmctl.manifests.build import built_objects
from llmctl.manifests.routing import ROUTER_API_KEYS_ENV
from llmctl.modelstore import stages
from llmctl.router.app import load_api_keys
from llmctl.router.table import Limits, RouterConfig
from tests.support.range_server import range_server
from tests.support.router import SRC

STACK = Stack()
CASES = [(cloud, gpu) for cloud in catalog.CLOUDS for gpu in (False, True)]
IDS = [f"{c.value}-{'gpu' if g else 'cpu'}" for c, g in CASES]


def _by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _stack(*sets: str) -> Stack:
    """The defaults with `--set` flags on top, as `llmctl render --set` reads them."""
    return load_stack(env={}, flags=parse_set_flags(sets)).stack


def _objects(stack: Stack = STACK, cloud: CloudName = CloudName.AWS, gpu: bool = True) -> Any:
    return _by_name(built_objects(stack, cloud, gpu))


# --- #2, #4, #5: model storage that follows the pod ---------------------------------------------


@pytest.mark.parametrize(("cloud", "gpu"), CASES, ids=IDS)
def test_no_model_volume_is_shared_between_pods(cloud: CloudName, gpu: bool) -> None:
    """Each pod gets its own model volume, made with it and deleted with it: two replicas never
    fight over one ReadWriteOnce disk (Multi-Attach), and a pod after a scale to zero is not
    pinned to the zone of a disk an earlier pod left behind. The CPU tier's is a claim (a
    network disk); the GPU tier's an emptyDir on the node's local disk (issue 30), bounded by
    storageSize."""
    objects = built_objects(STACK, cloud, gpu)
    assert [o for o in objects if o["kind"] == "PersistentVolumeClaim"] == []
    seen = set()
    for obj in objects:
        if obj["kind"] != "Deployment" or not obj["metadata"]["name"].endswith("llm-server"):
            continue
        volumes = {v["name"]: v for v in _pod(obj)["volumes"]}
        assert "persistentVolumeClaim" not in volumes["models"]
        seen.add(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "gpu-llm-server":
            assert volumes["models"] == {
                "name": "models",
                "emptyDir": {"sizeLimit": STACK.gpu.model.storage_size},
            }
            continue
        claim = volumes["models"]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim["accessModes"] == ["ReadWriteOnce"]
    assert seen == ({"cpu-llm-server", "gpu-llm-server"} if gpu else {"cpu-llm-server"})


def test_model_volume_follows_the_config_per_tier() -> None:
    """gpu.model.volume ephemeral puts the GPU tier back on a claim; cpu.model.volume local puts
    the CPU tier on its node's disk (an emptyDir of storageSize), in the base and the
    component alike."""
    stack = _stack("gpu.model.volume=ephemeral", "cpu.model.volume=local")
    objects = _objects(stack)
    gpu = {v["name"]: v for v in _pod(objects[("Deployment", "gpu-llm-server")])["volumes"]}
    assert gpu["models"]["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"] == {
        "requests": {"storage": "10Gi"}
    }
    cpu = {v["name"]: v for v in _pod(objects[("Deployment", "cpu-llm-server")])["volumes"]}
    assert cpu["models"] == {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}}


def test_storage_class_per_tier_reaches_each_pods_claim() -> None:
    stack = _stack(
        "cpu.model.storageClassName=gp3",
        "gpu.model.storageClassName=gp3-fast",
        "gpu.model.volume=ephemeral",
    )
    objects = _objects(stack)
    for name, expected in (("cpu-llm-server", "gp3"), ("gpu-llm-server", "gp3-fast")):
        volumes = _pod(objects[("Deployment", name)])["volumes"]
        claim = volumes[0]["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert claim["storageClassName"] == expected
    # Unset, the claim names no class: the cluster's default decides.
    default = _pod(_objects()[("Deployment", "cpu-llm-server")])["volumes"][0]
    assert "storageClassName" not in default["ephemeral"]["volumeClaimTemplate"]["spec"]


def _fetch_container(stack: Stack = STACK) -> dict[str, Any]:
    objects = _objects(stack, gpu=False)
    fetch: dict[str, Any] = _pod(objects[("Deployment", "cpu-llm-server")])["initContainers"][0]
    assert fetch["name"] == "fetch-model"
    return fetch


def _run_fetch(
    fetch: dict[str, Any], url: str, target: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The rendered init container's command with its rendered environment (a Secret's value,
    absent, is left out as the kubelet does for an optional one), the model's URL and path
    swapped for a local server and a temporary directory, and `env` on top."""
    assert fetch["command"] == ["llmctl", "model", "fetch"]
    rendered = {item["name"]: item["value"] for item in fetch["env"] if "value" in item}
    rendered |= {
        "MODEL_URI": url,
        "MODEL_PATH": str(target),
        "MODEL_FETCH_METRICS_FILE": str(target.parent / ".llmctl-fetch.prom"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *fetch["command"][1:]],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC), **rendered, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def served_model(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "served" / "model.gguf"
    path.parent.mkdir()
    data = b"GGUF" + os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_configured_sha256_is_checked_before_the_model_is_used(
    served_model: tuple[Path, str], tmp_path: Path
) -> None:
    """The init container's command, run for real: a wrong digest fails and leaves no file the
    server would load; the right one puts it into place."""
    source, good = served_model
    fetch = _fetch_container(_stack("cpu.model.sha256=" + "a" * 64))
    assert {"name": "MODEL_SHA256", "value": "a" * 64} in fetch["env"]
    target = tmp_path / "models" / "model.gguf"
    with range_server({"model.gguf": source}) as served:
        bad = _run_fetch(fetch, f"{served.base_url}/model.gguf", target)
        assert bad.returncode == 1, bad.stderr
        assert "sha256 mismatch" in bad.stderr
        assert not target.exists()
        assert not target.with_name(target.name + ".part").exists()
        ok = _run_fetch(fetch, f"{served.base_url}/model.gguf", target, MODEL_SHA256=good)
    assert ok.returncode == 0, ok.stderr
    assert target.read_bytes() == source.read_bytes()


def test_the_hub_download_is_the_parallel_ranged_fetcher_and_logs_its_stage(
    served_model: tuple[Path, str], tmp_path: Path
) -> None:
    """Issue 30: the Hub path runs the same fetcher as the stores (it was curl, one stream):
    ranged GETs in parallel, the digest checked, the fetch stage logged and recorded."""
    source, digest = served_model
    fetch = _fetch_container()
    target = tmp_path / "models" / "model.gguf"
    with range_server({"model.gguf": source}) as served:
        done = _run_fetch(
            fetch,
            f"{served.base_url}/model.gguf",
            target,
            MODEL_SHA256=digest,
            MODEL_FETCH_CHUNK_MIB="1",
        )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == source.read_bytes()
    ranges = [r for _, r in served.requests if r is not None]
    assert len(ranges) >= 4, served.requests  # 1 MiB ranges of a 3 MiB file
    line = next(x for x in done.stdout.splitlines() if x.startswith("llmctl-stage stage=fetch"))
    assert stages.parse_stage_line(line)["sha256"] == "verified"
    recorded, _ = stages.read_metrics_record(target.parent / ".llmctl-fetch.prom")
    assert [s.name for s in recorded] == ["fetch"]
    assert recorded[0].fields["bytes"] == source.stat().st_size


def test_the_fetch_sends_hf_token_only_when_the_secret_gives_one(
    served_model: tuple[Path, str], tmp_path: Path
) -> None:
    source, digest = served_model
    fetch = _fetch_container()
    secret = next(item for item in fetch["env"] if item["name"] == "HF_TOKEN")
    assert secret["valueFrom"]["secretKeyRef"]["optional"] is True
    with range_server({"model.gguf": source}, record_headers=("Authorization",)) as served:
        first = _run_fetch(
            fetch, f"{served.base_url}/model.gguf", tmp_path / "a" / "m.gguf", MODEL_SHA256=digest
        )
        assert first.returncode == 0, first.stderr
        without = list(served.headers)
        second = _run_fetch(
            fetch,
            f"{served.base_url}/model.gguf",
            tmp_path / "b" / "m.gguf",
            HF_TOKEN="hf_s3cret",
            MODEL_SHA256=digest,
        )
        assert second.returncode == 0, second.stderr
        with_token = served.headers[len(without) :]
    assert {h.get("Authorization") for h in without} == {None}
    assert {h.get("Authorization") for h in with_token} == {"Bearer hf_s3cret"}
    assert (tmp_path / "b" / "m.gguf").read_bytes() == source.read_bytes()
    assert "hf_s3cret" not in second.stdout + second.stderr  # never logged


def test_the_fetch_reopens_a_stalled_range_and_finishes(
    served_model: tuple[Path, str], tmp_path: Path
) -> None:
    """A range that stops sending is given up after the stall timeout (30 s rendered; 2 s here,
    through its own setting) and fetched again; the download completes, checked."""
    source, digest = served_model
    fetch = _fetch_container()
    target = tmp_path / "models" / "model.gguf"
    with range_server({"model.gguf": source}) as served:
        served.stall = 1
        started = time.monotonic()
        done = _run_fetch(
            fetch,
            f"{served.base_url}/model.gguf",
            target,
            MODEL_SHA256=digest,
            MODEL_FETCH_CHUNK_MIB="1",
            MODEL_FETCH_STALL_SECONDS="2",
        )
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert served.stalled == 1
    assert target.read_bytes() == source.read_bytes()
    assert took < 25, took  # the stall setting (2 s), not the rendered 30 s


def test_the_fetch_gives_up_when_every_try_stalls(
    served_model: tuple[Path, str], tmp_path: Path
) -> None:
    """A server that never sends the rest fails the pod's fetch with one clear line, instead
    of waiting forever; nothing is left for llama-server to load."""
    source, digest = served_model
    fetch = _fetch_container()
    target = tmp_path / "models" / "model.gguf"
    with range_server({"model.gguf": source}) as served:
        served.stall = 10_000
        done = _run_fetch(
            fetch,
            f"{served.base_url}/model.gguf",
            target,
            MODEL_SHA256=digest,
            MODEL_FETCH_CHUNK_MIB="4",
            MODEL_FETCH_STALL_SECONDS="1",
        )
    assert done.returncode == 1, done.stderr
    assert "model fetch failed" in done.stderr
    assert not target.exists()


# --- #8, #16: readiness and disruption --------------------------------------------------------


def test_cpu_tier_runs_two_pods_spread_and_a_drain_leaves_one() -> None:
    objects = _objects(gpu=False)
    cpu = objects[("Deployment", "cpu-llm-server")]
    assert cpu["spec"]["replicas"] == 2
    assert cpu["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    keys = [c["topologyKey"] for c in _pod(cpu)["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    budget = objects[("PodDisruptionBudget", "cpu-llm-server")]
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": cpu["spec"]["selector"]["matchLabels"]},
    }


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_router_budget_never_blocks_a_drain(replicas: int) -> None:
    """minAvailable 1 with one replica refuses every eviction (node drains, EKS/AKS upgrades
    fail); maxUnavailable 1 always lets one pod go."""
    stack = Stack.model_validate({"router": {"replicas": replicas}})
    budget = _objects(stack, gpu=False)[("PodDisruptionBudget", "llm-router")]["spec"]
    assert "minAvailable" not in budget
    assert budget["maxUnavailable"] == 1


def test_gpu_tier_never_surges_a_second_gpu_node() -> None:
    gpu = _objects()[("Deployment", "gpu-llm-server")]
    assert gpu["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_router_spreads_over_nodes_and_zones() -> None:
    router = _objects(gpu=False)[("Deployment", "llm-router")]
    constraints = _pod(router)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    assert {c["whenUnsatisfiable"] for c in constraints} == {"ScheduleAnyway"}


# --- #9: KEDA owns the GPU replicas -----------------------------------------------------------


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_gpu_deployment_leaves_replicas_to_keda(cloud: CloudName) -> None:
    """A `replicas` in the applied manifest resets KEDA's count on every apply or GitOps sync."""
    objects = _objects(cloud=cloud)
    assert "replicas" not in objects[("Deployment", "gpu-llm-server")]["spec"]
    scaled = objects[("ScaledObject", "gpu-llm-server")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "gpu-llm-server"
    assert scaled["minReplicaCount"] == STACK.gpu.min_replicas


# --- #7: graceful shutdown, the pod's side ----------------------------------------------------


def test_router_pods_leave_the_endpoints_before_sigterm_and_have_time_to_drain() -> None:
    pod = _pod(_objects(gpu=False)[("Deployment", "llm-router")])
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]
    assert pre_stop == {"sleep": {"seconds": render.ROUTER_PRESTOP_SECONDS}}
    grace = pod["terminationGracePeriodSeconds"]
    # The router's own drain ends drainDeadlineSeconds after SIGTERM, which comes after the
    # preStop: the kubelet's SIGKILL must come later still.
    deadline = getattr(Limits(), "drain_deadline_seconds", render.ROUTER_DRAIN_DEADLINE_SECONDS)
    assert deadline == render.ROUTER_DRAIN_DEADLINE_SECONDS
    assert grace > render.ROUTER_PRESTOP_SECONDS + deadline


def test_router_readiness_does_not_hang_on_its_backends() -> None:
    """One CPU pod down made every router pod not ready (its /readyz wants every model
    answerable), emptying the Service, GPU traffic included: readiness is the process's."""
    pod = _pod(_objects(gpu=False)[("Deployment", "llm-router")])
    router = pod["containers"][0]
    assert router["readinessProbe"]["httpGet"]["path"] == "/healthz"


class _Metrics(http.server.BaseHTTPRequestHandler):
    """llama-server's /metrics: busy for the first `busy` scrapes, then idle."""

    busy = 3
    scrapes = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).scrapes += 1
        processing = 1 if type(self).scrapes <= type(self).busy else 0
        body = (
            "# HELP llamacpp:requests_processing Number of requests processing.\n"
            "# TYPE llamacpp:requests_processing gauge\n"
            f"llamacpp:requests_processing {processing}\n"
            "llamacpp:requests_deferred 0\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[int]:
    _Metrics.scrapes = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("tier", ["cpu-llm-server", "gpu-llm-server"])
def test_llama_server_pre_stop_waits_until_no_request_is_running(
    tier: str, metrics_server: int, tmp_path: Path
) -> None:
    """llama-server stops at once on SIGTERM, cutting what it generates: its preStop (run here
    for real, with sh, curl and awk) returns only once /metrics shows nothing processing."""
    pod = _pod(_objects()[("Deployment", tier)])
    assert pod["terminationGracePeriodSeconds"] == render.LLAMA_GRACE_SECONDS
    script = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert f"+ {render.LLAMA_GRACE_SECONDS - render.LLAMA_DRAIN_MARGIN_SECONDS - 5} ))" in script
    # The port is the pod's; here it is the stand-in's. `sleep` is shortened, not skipped.
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{metrics_server}")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sleep").write_text("#!/bin/sh\nexec /bin/sleep 0.05\n")
    (shim / "sleep").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", script], env=env, timeout=60, capture_output=True)
    assert done.returncode == 0
    assert _Metrics.scrapes == _Metrics.busy + 1  # waited through every busy scrape


def test_llama_server_pre_stop_ends_when_the_server_is_gone(tmp_path: Path) -> None:
    script = _pod(_objects()[("Deployment", "gpu-llm-server")])["containers"][0]["lifecycle"][
        "preStop"
    ]["exec"]["command"][-1]
    script = script.replace("127.0.0.1:8080", "127.0.0.1:9")  # nothing listens
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (shim / "sleep").chmod(0o755)
    env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    assert subprocess.run(["sh", "-c", script], env=env, timeout=60).returncode == 0


# --- #6: CUDA ---------------------------------------------------------------------------------


def test_gpu_server_fails_without_a_usable_gpu_and_caches_its_jit() -> None:
    pod = _pod(_objects()[("Deployment", "gpu-llm-server")])
    server = pod["containers"][0]
    args = server["args"]
    assert args[args.index("--device") + 1] == "CUDA0"
    env = {e["name"]: e["value"] for e in server["env"]}
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cache = mounts[env["CUDA_CACHE_PATH"]]
    assert "emptyDir" in volumes[cache]  # writable under a read-only root filesystem
    assert int(env["CUDA_CACHE_MAXSIZE"]) >= 1024**3
    cpu = _pod(_objects()[("Deployment", "cpu-llm-server")])["containers"][0]
    assert "--device" not in cpu["args"] and "env" not in cpu


# --- #11, #12: authentication and llama-server exposure ---------------------------------------


def test_router_api_keys_come_from_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack.model_validate({"router": {"apiKeys": {"secretName": "router-keys"}}})
    objects = _objects(stack, gpu=False)
    env = _pod(objects[("Deployment", "llm-router")])["containers"][0]["env"]
    assert {
        "name": ROUTER_API_KEYS_ENV,
        "valueFrom": {"secretKeyRef": {"name": "router-keys", "key": "api-keys"}},
    } in env
    table = RouterConfig.model_validate(
        yaml.safe_load(objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"])
    )
    assert table.api_keys.env == ROUTER_API_KEYS_ENV
    # The router reads the keys the kubelet puts in that variable.
    monkeypatch.setenv(ROUTER_API_KEYS_ENV, "k1,k2")
    assert [k.secret for k in load_api_keys(table.api_keys)] == [b"k1", b"k2"]
    # Unset, the router stays open, and nothing names a Secret.
    open_env = _pod(_objects(gpu=False)[("Deployment", "llm-router")])["containers"][0]["env"]
    assert all("valueFrom" not in e for e in open_env)


@pytest.mark.parametrize("tier", ["cpu-llm-server", "gpu-llm-server"])
def test_llama_servers_serve_no_web_ui_and_no_slots(tier: str) -> None:
    args = _pod(_objects()[("Deployment", tier)])["containers"][0]["args"]
    assert "--no-webui" in args and "--no-slots" in args


def test_image_pull_secrets_reach_every_llmctl_pod_in_the_namespace() -> None:
    stack = Stack.model_validate({"imagePullSecrets": ["regcred"]})
    for name in ("llm-router", "cpu-llm-server", "gpu-llm-server"):
        assert _pod(_objects(stack)[("Deployment", name)])["imagePullSecrets"] == [
            {"name": "regcred"}
        ]
    assert "imagePullSecrets" not in _pod(_objects()[("Deployment", "llm-router")])


# --- #13, #14, #19: GPU metrics and sizing ----------------------------------------------------


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_dcgm_maps_gpus_to_pods_on_every_cloud_and_labels_the_node(cloud: CloudName) -> None:
    dcgm = _pod(_objects(cloud=cloud)[("DaemonSet", "dcgm-exporter")])["containers"][0]
    env = {e["name"]: e for e in dcgm["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    id_type = env.get("DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE", {}).get("value")
    # GKE's device plugin names GPUs by device name, not UUID (the exporter's default).
    assert id_type == ("device-name" if cloud is CloudName.GCP else None)


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_gpu_pod_fits_a_4_vcpu_node_beside_its_daemons(cloud: CloudName) -> None:
    """Allocatable on a 4-vCPU node is about 3.9 CPU; kube-proxy, the CNI, CSI node plugins,
    logging agents, the device plugin and DCGM take their share. Leave at least 1.5 CPU."""
    vcpus = catalog.INSTANCE_TYPES[cloud][STACK.gpu.instance_types.of(cloud)].vcpus
    objects = _objects(cloud=cloud)
    requested = _millicores(
        _pod(objects[("Deployment", "gpu-llm-server")])["containers"][0]["resources"]["requests"][
            "cpu"
        ]
    )
    agents = sum(
        _millicores(_pod(o)["containers"][0]["resources"]["requests"]["cpu"])
        for o in objects.values()
        if o["kind"] == "DaemonSet"
    )
    assert vcpus * 1000 - requested - agents >= 1500 + 0  # room for the node's own daemons


# --- #10: the GPU check pod, and every pod llmctl renders, meet `restricted` -------------------


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Pod Security Standard `restricted` (v1.33 rules) on a pod spec: what the API server
    would refuse in a namespace that enforces it."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        found.append("host namespaces")
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        ctx = container.get("securityContext") or {}
        name = container["name"]
        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation != false")
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            found.append(f"{name}: capabilities.drop lacks ALL")
        added = set((ctx.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"{name}: adds {sorted(added)}")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot != true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort")
    return found


def test_the_checker_refuses_what_the_review_found_in_the_old_check_pod() -> None:
    old = {"containers": [{"name": "nvidia-smi", "image": "x", "command": ["nvidia-smi"]}]}
    assert len(restricted_violations(old)) == 4


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_gpu_check_pod_meets_restricted_pod_security(cloud: CloudName) -> None:
    from llmctl.probe.gpu_check import check_pod

    assert restricted_violations(check_pod(STACK, cloud)["spec"]) == []


@pytest.mark.parametrize(("cloud", "gpu"), CASES, ids=IDS)
def test_every_pod_in_the_namespace_meets_restricted(cloud: CloudName, gpu: bool) -> None:
    for obj in built_objects(STACK, cloud, gpu):
        if obj["kind"] in {"Deployment", "DaemonSet"} and obj["metadata"]["namespace"] == (
            "llm-server"
        ):
            assert restricted_violations(_pod(obj)) == [], obj["metadata"]["name"]


def test_pre_stop_holds_sigterm_until_a_real_llama_server_finishes(tmp_path: Path) -> None:
    """Against the real llama-server (the pinned llama.cpp release, run with the rendered
    `--no-webui --no-slots --metrics`): the preStop returns only after a generation that was
    running when it started has finished, so the SIGTERM that follows cuts nothing."""
    import json
    import time
    import urllib.error
    import urllib.request

    from tests.cli.test_inference_cmd import smollm2_path
    from tests.support.llama import LlamaServer

    args = _pod(_objects(gpu=False)[("Deployment", "cpu-llm-server")])["containers"][0]["args"]
    extra = tuple(a for a in args if a in ("--no-webui", "--no-slots"))
    assert extra == ("--no-webui", "--no-slots")
    script = _pod(_objects(gpu=False)[("Deployment", "cpu-llm-server")])["containers"][0][
        "lifecycle"
    ]["preStop"]["exec"]["command"][-1]
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sleep").write_text("#!/bin/sh\nexec /bin/sleep 0.05\n")
    (shim / "sleep").chmod(0o755)
    with LlamaServer(smollm2_path(), "smollm2", tmp_path, ctx=1024, extra_args=extra) as server:
        # /slots is off: its in-flight prompts are not for anyone who can reach the pod.
        try:
            urllib.request.urlopen(server.url + "/slots", timeout=5)
            slots_status = 200
        except urllib.error.HTTPError as error:
            slots_status = error.code
        assert slots_status != 200
        finished: list[float] = []

        def generate() -> None:
            body = json.dumps(
                {"prompt": "Tell me a long story.", "n_predict": 200, "ignore_eos": True}
            ).encode()
            request = urllib.request.Request(
                server.url + "/completion", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                assert json.load(response)["tokens_predicted"] == 200
            finished.append(time.monotonic())

        worker = threading.Thread(target=generate)
        worker.start()

        def processing() -> float:
            with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
                text = response.read().decode()
            return sum(
                float(line.split()[1])
                for line in text.splitlines()
                if line.startswith("llamacpp:requests_processing ")
            )

        deadline = time.monotonic() + 60
        while processing() == 0 and not finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not finished, "the generation ended before the test saw it running"
        local = script.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
        env = {"PATH": f"{shim}:{os.environ['PATH']}"}
        done = subprocess.run(["sh", "-c", local], env=env, timeout=300)
        returned = time.monotonic()
        worker.join(timeout=300)
        assert done.returncode == 0
        assert finished and finished[0] <= returned
