"""Stack -> the Kustomize trees of every cloud: a base, a GPU overlay, and the shared component.

Pure: it returns documents; `writer.py` puts them on disk and `build.py` flattens one overlay into
the objects `kubectl kustomize` would print.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from yaml import safe_load as yaml_load

from llmctl import catalog
from llmctl.assets import asset_dir
from llmctl.catalog import CloudName
from llmctl.config import (
    NAMESPACE,
    CpuTier,
    GpuTier,
    ModelDownload,
    ModelSpec,
    ModelVolume,
    Resources,
    Stack,
)
from llmctl.manifests import llamacpp, model_store
from llmctl.manifests.routing import (
    CPU_SERVER,
    GPU_SERVER,
    PEER_KEY_SECRET_KEY,
    ROUTER_API_KEYS_ENV,
    ROUTER_PEER_KEY_ENV,
    proxy_timeout_seconds,
    router_config,
)
from llmctl.manifests.templating import render_documents
from llmctl.router.table import dump_router_config

INSTANCE = "llm-router"
ROUTER_PORT = 8080
ROUTER_CONFIG_PATH = "/etc/llm-router/router.yaml"
COMPONENT_DIR = PurePosixPath("components/nvidia-gpu")

POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
FETCHER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
HF_TOKEN_ENV = "HF_TOKEN"
# The stage watcher (modelstore/watch.py), a native sidecar in each llama pod (issue 30):
# standard library only, so a small Python process.
STAGES_COMMAND = ["python3", "-m", "llmctl.modelstore.watch"]
STAGES_PORT = 9464
STAGES_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"memory": "64Mi"},
}

# Pod-side shutdown, in one place (docs/deploy.md, "Rollouts, drains and scale-in").
# The router: a preStop sleep lets kube-proxy and load balancers drop the pod's endpoint before
# SIGTERM; then the router drains (issue 19: it keeps accepting for limits.drainWindowSeconds,
# then lets in-flight requests finish until limits.drainDeadlineSeconds after the signal).
# The grace period covers both, plus a margin, before the kubelet's SIGKILL.
ROUTER_PRESTOP_SECONDS = 5
ROUTER_DRAIN_DEADLINE_SECONDS = 60  # the router's default limits.drainDeadlineSeconds
ROUTER_DRAIN_MARGIN_SECONDS = 5
ROUTER_GRACE_SECONDS = (
    ROUTER_PRESTOP_SECONDS + ROUTER_DRAIN_DEADLINE_SECONDS + ROUTER_DRAIN_MARGIN_SECONDS
)
# llama-server stops at once on SIGTERM, cutting what it is generating. Its preStop waits until
# its /metrics show no request processing or deferred (at most the grace period less a margin),
# so a pod that KEDA scales in, a rollout or a drain finishes its requests first.
LLAMA_GRACE_SECONDS = 120
LLAMA_DRAIN_MARGIN_SECONDS = 10
DRAIN_SCRIPT = (
    "sleep 5\n"
    "end=$(( $(date +%s) + {wait} ))\n"
    'while [ "$(date +%s)" -lt "$end" ]; do\n'
    "  curl -sf http://127.0.0.1:{port}/metrics | awk "
    "'/^llamacpp:requests_(processing|deferred) / {{ n += $2 }} END {{ exit !(n > 0) }}' "
    "|| exit 0\n"
    "  sleep 1\n"
    "done\n"
)
# The CUDA JIT cache (the pinned CUDA image carries T4 code only as PTX): on a writable volume,
# so a restarted container reuses what the last one compiled.
CUDA_CACHE_DIR = "/var/cache/cuda"
CUDA_CACHE_BYTES = 1024**3

Documents = list[dict[str, Any]]


def labels(name: str, component: str) -> dict[str, str]:
    return {
        **selector(name, component),
        "app.kubernetes.io/part-of": "llm-router",
        "app.kubernetes.io/managed-by": "llmctl",
    }


def selector(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": INSTANCE,
        "app.kubernetes.io/component": component,
    }


def _resources(resources: Resources, extra_limits: dict[str, Any] | None = None) -> dict[str, Any]:
    out = resources.model_dump(exclude_none=True)
    out.setdefault("limits", {}).update(extra_limits or {})
    return {key: value for key, value in out.items() if value}


@dataclass(frozen=True)
class Toleration:
    key: str
    value: str | None
    effect: str

    def as_dict(self) -> dict[str, str]:
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


def gpu_tolerations(cloud: CloudName) -> list[dict[str, str]]:
    tolerations = [Toleration(catalog.GPU_TAINT.key, None, catalog.GPU_TAINT.effect)]
    spot = catalog.CLOUD_FACTS[cloud].spot_taint
    if spot is not None:
        tolerations.append(Toleration(spot.key, spot.value, spot.effect))
    return [t.as_dict() for t in tolerations]


def gpu_node_selector(stack: Stack, cloud: CloudName) -> dict[str, str]:
    key, value = catalog.GPU_NODE_LABEL_COMPUTE
    return {key: value, catalog.GPU_NODE_ACCELERATOR_LABEL: stack.gpu.gpu_of(cloud).label}


def _spread(selector_labels: dict[str, str]) -> list[dict[str, Any]]:
    """Prefer other nodes, then other zones, without ever leaving a pod Pending for it."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def model_volume(
    name: str, model: ModelSpec, labels_: dict[str, str], volume: ModelVolume
) -> dict[str, Any]:
    """Each pod's own model volume, never shared and gone with the pod, so replicas never share
    a disk and a pod is never pinned to the zone of a disk an earlier pod left behind.

    `local`: an emptyDir, which lives in the kubelet's ephemeral storage, i.e. on the node's
    local disk where the pool has one (`llmctl gpu enable` gives the GPU pool its NVMe instance
    store, local SSD or ephemeral OS disk); its sizeLimit is storageSize (the kubelet evicts a
    pod that writes more). `ephemeral`: a generic ephemeral volume, a claim made with the pod
    and deleted with it, on a network disk of storageClassName.
    """
    if volume == "local":
        return {"name": name, "emptyDir": {"sizeLimit": model.storage_size}}
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": model.storage_size}},
    }
    if model.storage_class_name is not None:
        spec["storageClassName"] = model.storage_class_name
    return {
        "name": name,
        "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": labels_}, "spec": spec}},
    }


def _tier(
    name: str,
    component: str,
    spec: CpuTier | GpuTier,
    image: str,
    replicas: int | None,
    stack: Stack,
    cloud: CloudName | None = None,
) -> dict[str, Any]:
    gpu = isinstance(spec, GpuTier)
    model = spec.model
    args = llamacpp.server_args(model, spec.llamacpp)
    gpu_limits = {spec.resource_name: spec.count} if isinstance(spec, GpuTier) else None
    resources = _resources(spec.resources, gpu_limits)
    tier_labels = labels(name, component)
    tier_selector = selector(name, component)
    models_dir = str(PurePosixPath(model.path).parent)
    fetch_env = hub_fetch_env(model, stack.model_download)
    # Issue 30: with a model store for this cloud, the pods fetch their copy in parallel.
    store_env = model_store.fetch_env(stack, cloud, model) if cloud is not None else []
    fetch = fetch_container(stack, store_env, fetch_env)
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": models_dir, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        model_volume("models", model, tier_labels, spec.model_volume),
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    env: list[dict[str, str]] = []
    if gpu:
        env = [
            {"name": "CUDA_CACHE_PATH", "value": CUDA_CACHE_DIR},
            {"name": "CUDA_CACHE_MAXSIZE", "value": str(CUDA_CACHE_BYTES)},
        ]
        mounts.append({"name": "cuda-cache", "mountPath": CUDA_CACHE_DIR})
        volumes.append({"name": "cuda-cache", "emptyDir": {"sizeLimit": "2Gi"}})
    return {
        "name": name,
        "labels": tier_labels,
        "selector": tier_selector,
        "model": {"uri": model.uri, "path": model.path},
        "fetch_env": fetch["env"],
        "fetch_image": fetch["image"],
        "fetch_command": fetch["command"],
        "stages_env": stages_env(model),
        "service_account": model_store.SERVICE_ACCOUNT if store_env else None,
        "pod_labels": tier_labels
        | (model_store.pod_labels(stack, cloud) if store_env and cloud else {}),
        "models_dir": models_dir,
        "image": image,
        "replicas": replicas,
        # GPU: never a surge pod, which would buy a second GPU node for the length of a rollout.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}
            if gpu
            else {"maxSurge": 1, "maxUnavailable": 0},
        },
        "grace_seconds": LLAMA_GRACE_SECONDS,
        "spread": [] if gpu else _spread(tier_selector),
        "disruption_budget": not gpu,
        "args": args,
        "env": env,
        "volume_mounts": mounts,
        "volumes": volumes,
        "resources": resources,
    }


def stages_env(model: ModelSpec) -> list[dict[str, Any]]:
    """The stage watcher's environment: the fetcher's record, llama-server, its own port."""
    return [
        {"name": "MODEL_FETCH_METRICS_FILE", "value": model_store.metrics_file(model)},
        {"name": "LLAMA_SERVER_URL", "value": f"http://127.0.0.1:{llamacpp.LLAMA_PORT}"},
        {"name": "STAGES_PORT", "value": str(STAGES_PORT)},
    ]


def hub_fetch_env(model: ModelSpec, download: ModelDownload) -> list[dict[str, Any]]:
    """The init container's environment for the Hub download: what, where to, its digest, and
    the Hub token from an optional Secret (absent, the pod starts without it)."""
    env: list[dict[str, Any]] = [
        {"name": "MODEL_URI", "value": model.uri},
        {"name": "MODEL_PATH", "value": model.path},
    ]
    if model.sha256 is not None:
        env.append({"name": "MODEL_SHA256", "value": model.sha256})
    secret = {"name": download.token_secret, "key": download.token_key, "optional": True}
    env.append({"name": HF_TOKEN_ENV, "valueFrom": {"secretKeyRef": secret}})
    env.append({"name": "MODEL_FETCH_METRICS_FILE", "value": model_store.metrics_file(model)})
    return env


def fetch_container(
    stack: Stack, store_env: list[dict[str, Any]], hub_env: list[dict[str, Any]]
) -> dict[str, Any]:
    """The `fetch-model` init container's image, command and environment: the pod's parallel
    fetcher (`llmctl model fetch`, in the router image) for the Hub as for a model store
    (issue 30); with a store, its variables replace the Hub's of the same name."""
    by_name = {item["name"]: item for item in store_env}
    hub_names = {item["name"] for item in hub_env}
    env = [by_name.get(item["name"], item) for item in hub_env]
    return {
        # A mirror of the router image may stand in (`images.modelFetcher`): it runs llmctl.
        "image": stack.images.model_fetcher or stack.images.router,
        "command": model_store.FETCH_COMMAND,
        "env": env + [item for item in store_env if item["name"] not in hub_names],
    }


def gpu_model_store_patch(stack: Stack, cloud: CloudName) -> Documents:
    """The GPU Deployment lives in the shared component, so a cloud's model store reaches it as
    a patch in that cloud's GPU overlay: fetch the store's copy, as the model-reading account."""
    model = stack.gpu.model
    store_env = model_store.fetch_env(stack, cloud, model)
    if not store_env:
        return []
    # The whole list, in the Deployment's order: kustomize puts a patch's list items first, so
    # a partial list would reorder the environment.
    fetch = fetch_container(stack, store_env, hub_fetch_env(model, stack.model_download))
    template: dict[str, Any] = {
        "spec": {
            "serviceAccountName": model_store.SERVICE_ACCOUNT,
            "initContainers": [
                {
                    "name": "fetch-model",
                    "image": fetch["image"],
                    "command": fetch["command"],
                    "env": fetch["env"],
                }
            ],
        }
    }
    extra_labels = model_store.pod_labels(stack, cloud)
    if extra_labels:
        template["metadata"] = {"labels": extra_labels}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": GPU_SERVER, "namespace": NAMESPACE},
            "spec": {"template": template},
        }
    ]


def exposure(stack: Stack, cloud: CloudName) -> dict[str, Any]:
    """The host, path and TLS settings of the cloud's Ingress or HTTPRoute (issue 16)."""
    expose = stack.router.expose
    url = stack.federation.router_urls.of(cloud)
    assert url is not None  # Stack validates: exposure needs every cloud's URL
    host = url.split("://", 1)[1].rstrip("/").split(":", 1)[0]
    annotations: dict[str, str] = {
        # Streams pass through as they come, and a long generation (or a long wait for a GPU)
        # is not cut at 60 s.
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": str(proxy_timeout_seconds(stack)),
        "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
    }
    if expose.tls.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = expose.tls.cluster_issuer
    parent: dict[str, Any] = {"name": expose.gateway.name}
    if expose.gateway.namespace:
        parent["namespace"] = expose.gateway.namespace
    if expose.gateway.section_name:
        parent["sectionName"] = expose.gateway.section_name
    return {
        "kind": expose.kind,
        "host": host,
        "ingress_class_name": expose.ingress_class_name,
        "tls_secret": expose.tls.secret_name,
        "annotations": annotations,
        "parent": parent,
        "timeout": f"{proxy_timeout_seconds(stack)}s",
    }


def _router(stack: Stack, cloud: CloudName, gpu: bool) -> dict[str, Any]:
    config_yaml = dump_router_config(router_config(stack, cloud, gpu))
    env: list[dict[str, Any]] = [
        {"name": "LLMCTL_ROUTER_CONFIG", "value": ROUTER_CONFIG_PATH},
        {"name": "PORT", "value": str(ROUTER_PORT)},
    ]
    keys = stack.router.api_keys
    if keys.secret_name is not None:
        env.append(
            {
                "name": ROUTER_API_KEYS_ENV,
                "valueFrom": {"secretKeyRef": {"name": keys.secret_name, "key": keys.key}},
            }
        )
    if stack.federation.enabled:  # issue 16: the key peers authenticate with
        secret = {"name": stack.federation.peer_key_secret, "key": PEER_KEY_SECRET_KEY}
        env.append({"name": ROUTER_PEER_KEY_ENV, "valueFrom": {"secretKeyRef": secret}})
    return {
        "labels": labels("llm-router", "router"),
        "selector": selector("llm-router", "router"),
        "image": stack.images.router,
        "replicas": stack.router.replicas,
        "port": ROUTER_PORT,
        # The image's entrypoint runs `llmctl router serve` with these.
        "args": ["router"],
        "env": env,
        "resources": _resources(stack.router.resources),
        "config_yaml": config_yaml,
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(),
        "prestop_seconds": ROUTER_PRESTOP_SECONDS,
        "grace_seconds": ROUTER_GRACE_SECONDS,
        "spread": _spread(selector("llm-router", "router")),
    }


def observability_file(name: str) -> str:
    """Alert rules and the dashboard live in the Helm chart's files/: one source for both paths."""
    return (asset_dir("charts") / "llm-router" / "files" / name).read_text(encoding="utf-8")


def alert_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml_load(observability_file("prometheus-rules.yaml"))
    return rules


def demand_query(cloud: CloudName, namespace: str = NAMESPACE) -> str:
    """GPU requests in flight or waiting in this namespace's routers, or 1 if none is but one
    arrived in the last minute: the gauge is sampled at scrape time and can miss a short request
    served from CPU, which must still wake the tier. The larger of the two, not their sum, so
    four streams on one replica's four slots ask for one replica, not two. Scoped to the
    namespace (the label the Prometheus Operator gives every scraped target), so two installs
    sharing one Prometheus never wake each other's GPUs."""
    labels = f'namespace="{namespace}", tier="gpu", cloud="{cloud.value}"'
    in_flight = f"sum(llm_router_tier_demand{{{labels}}})"
    arrived = f"clamp_max(sum(increase(llm_router_tier_requests_total{{{labels}}}[1m])), 1)"
    return f"{in_flight} + clamp_min({arrived} - {in_flight}, 0)"


# KEDA v2.21's fallback (pkg/fallback/fallback.go, pkg/scaling/executor/scale_scaledobjects.go):
# once a trigger has failed more than failureThreshold polls in a row, KEDA serves the HPA
# `replicas` as a stand-in metric AND counts the trigger as active, which wakes a tier at zero
# (to minReplicaCount or 1), whatever `replicas` says. Before that, a failing ScaledObject with a
# fallback whose replicas is 0 is scaled to zero after its cooldown, and one without a fallback
# is left where it is (1 on a first apply: the API server's default). So failing closed is a
# fallback of 0 replicas whose threshold is never reached; a bound above 0 is KEDA's own
# fallback after three failed polls.
FAIL_CLOSED_THRESHOLD = 2**31 - 1  # int32, the CRD field's type: 32,000 years of 15 s polls
FALLBACK_FAILURE_THRESHOLD = 3


def scaler_fallback(replicas: int) -> dict[str, int]:
    """The ScaledObject's `fallback`: what the GPU tier does while KEDA cannot read demand."""
    if replicas == 0:
        return {"failureThreshold": FAIL_CLOSED_THRESHOLD, "replicas": 0}
    return {"failureThreshold": FALLBACK_FAILURE_THRESHOLD, "replicas": replicas}


def _context(stack: Stack, cloud: CloudName | None, gpu: bool) -> dict[str, Any]:
    compute_key, compute_value = catalog.GPU_NODE_LABEL_COMPUTE
    context: dict[str, Any] = {
        "namespace": NAMESPACE,
        "instance": INSTANCE,
        "namespace_labels": {
            **labels(NAMESPACE, "router"),
            # Every pod llmctl puts here meets the restricted Pod Security Standard.
            "pod-security.kubernetes.io/enforce": "restricted",
        },
        "images": stack.images,
        "pod_security": POD_SECURITY,
        "container_security": CONTAINER_SECURITY,
        "fetcher_resources": FETCHER_RESOURCES,
        "stages_command": STAGES_COMMAND,
        "stages_port": STAGES_PORT,
        "stages_resources": STAGES_RESOURCES,
        "drain_script": DRAIN_SCRIPT.format(
            wait=LLAMA_GRACE_SECONDS - LLAMA_DRAIN_MARGIN_SECONDS - 5, port=llamacpp.LLAMA_PORT
        ),
        "image_pull_secrets": [{"name": name} for name in stack.image_pull_secrets],
        "llama_port": llamacpp.LLAMA_PORT,
        "router": _router(stack, cloud, gpu)
        if cloud
        else {
            "selector": selector("llm-router", "router"),
            "labels": labels("llm-router", "router"),
        },
        "device_plugin": {
            "labels": labels("nvidia-device-plugin", "device-plugin"),
            "selector": selector("nvidia-device-plugin", "device-plugin"),
        },
        "dcgm": {
            "labels": labels("dcgm-exporter", "dcgm-exporter"),
            "selector": selector("dcgm-exporter", "dcgm-exporter"),
        },
        "llama_monitor": {"labels": labels("llama-cpp", "llama-cpu")},
        "monitor_labels": stack.observability.monitor_labels,
        "prometheus_namespace": stack.observability.prometheus_namespace,
        "stack": stack,
        "gpu_labels": labels(GPU_SERVER, "llama-gpu"),
        "gpu_node_selector_compute": {compute_key: compute_value},
        "gpu_taint_tolerations": [
            Toleration(catalog.GPU_TAINT.key, None, catalog.GPU_TAINT.effect).as_dict()
        ],
    }
    if cloud is not None:
        context |= {
            "cloud_facts": catalog.CLOUD_FACTS[cloud],
            "gpu_node_selector": gpu_node_selector(stack, cloud),
            "gpu_tolerations": gpu_tolerations(cloud),
            "demand_query": demand_query(cloud),
            "scaler_fallback": scaler_fallback(stack.gpu.metrics_failure_replicas),
        }
    return context


def cpu_tier(stack: Stack, cloud: CloudName | None = None) -> dict[str, Any]:
    return _tier(
        CPU_SERVER,
        "llama-cpu",
        stack.cpu,
        stack.images.llama_server,
        stack.cpu.replicas,
        stack,
        cloud,
    )


def gpu_tier(stack: Stack) -> dict[str, Any]:
    # Scale to zero: KEDA, not the manifest, decides how many GPU pods run (no `replicas`).
    # Shared by the clouds: a cloud's model store is a patch in its overlay.
    return _tier(GPU_SERVER, "llama-gpu", stack.gpu, stack.images.llama_server_cuda, None, stack)


@dataclass(frozen=True)
class Kustomization:
    """One directory of the tree: its resource files and patch files, each a list of documents."""

    directory: PurePosixPath
    kind: str  # Kustomization or Component
    resources: dict[str, Documents]
    patches: dict[str, Documents]
    bases: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # the templates it came from, for the file headers

    def kustomization(self) -> dict[str, Any]:
        api = "v1alpha1" if self.kind == "Component" else "v1beta1"
        doc: dict[str, Any] = {
            "apiVersion": f"kustomize.config.k8s.io/{api}",
            "kind": self.kind,
        }
        if self.bases or self.resources:
            doc["resources"] = [*self.bases, *self.resources]
        if self.components:
            doc["components"] = list(self.components)
        if self.patches:
            doc["patches"] = [{"path": name} for name in self.patches]
        return doc


def base(stack: Stack, cloud: CloudName) -> Kustomization:
    context = _context(stack, cloud, gpu=False)
    resources = {
        "namespace.yaml": render_documents("base/namespace.yaml.j2", context),
        "router.yaml": render_documents("base/router.yaml.j2", context),
        "cpu-llm-server.yaml": render_documents(
            "llama-server.yaml.j2", context | {"tier": cpu_tier(stack, cloud)}
        ),
    }
    if stack.model_store.of(cloud) is not None:  # issue 30: the pods read the store as this
        resources["model-reader.yaml"] = [
            model_store.service_account(
                stack, cloud, labels(model_store.SERVICE_ACCOUNT, "llama-cpu")
            )
        ]
    if stack.router.expose.enabled:  # issue 16: the router outside the cluster
        resources["router-expose.yaml"] = render_documents(
            "base/router-expose.yaml.j2", context | {"expose": exposure(stack, cloud)}
        )
    return Kustomization(
        directory=PurePosixPath(cloud.value, "base"),
        kind="Kustomization",
        resources=resources,
        patches={},
    )


def nvidia_component(stack: Stack) -> Kustomization:
    context = _context(stack, None, gpu=True)
    return Kustomization(
        directory=COMPONENT_DIR,
        kind="Component",
        resources={
            "gpu-llm-server.yaml": render_documents(
                "llama-server.yaml.j2", context | {"tier": gpu_tier(stack)}
            ),
            "device-plugin.yaml": render_documents(
                "components/nvidia-gpu/device-plugin.yaml.j2", context
            ),
            "runtime-class.yaml": render_documents(
                "components/nvidia-gpu/runtime-class.yaml.j2", context
            ),
            "dcgm-exporter.yaml": render_documents(
                "components/nvidia-gpu/dcgm-exporter.yaml.j2", context
            ),
            "monitoring.yaml": render_documents(
                "components/nvidia-gpu/monitoring.yaml.j2",
                context
                | {
                    "alert_rules": alert_rules(),
                    "dashboard_json": observability_file("grafana-dashboard.json"),
                },
            ),
        },
        patches={},
    )


def gpu_overlay(stack: Stack, cloud: CloudName) -> Kustomization:
    context = _context(stack, cloud, gpu=True)
    store_patch = gpu_model_store_patch(stack, cloud)
    return Kustomization(
        directory=PurePosixPath(cloud.value, "overlays", "gpu"),
        kind="Kustomization",
        resources={
            "scaledobject.yaml": render_documents("overlays/gpu/scaledobject.yaml.j2", context),
        },
        patches={
            name: render_documents(f"overlays/gpu/{name}.j2", context)
            for name in (
                "gpu-scheduling.yaml",
                "router-config.yaml",
                "device-plugin.yaml",
                "dcgm-exporter.yaml",
            )
        }
        | ({"model-store.yaml": store_patch} if store_patch else {}),
        bases=("../../base",),
        components=("../../../components/nvidia-gpu",),
    )


def render_tree(
    stack: Stack, clouds: tuple[CloudName, ...] = catalog.CLOUDS
) -> list[Kustomization]:
    tree = [nvidia_component(stack)]
    for cloud in clouds:
        tree += [base(stack, cloud), gpu_overlay(stack, cloud)]
    return tree
