"""Stack -> the values of the `llm-router` Helm chart for one cloud, with or without the GPU tier.

`llmctl render` writes them as charts/llm-router/values-<cloud>-{cpu,gpu}.yaml, so one config
drives both deployment paths: `helm template -f values-aws-gpu.yaml` gives the same workloads as
`kubectl kustomize clusters/aws/overlays/gpu` (a test compares them field by field). Pure.

The chart's top-level `model` and `llamacpp` configure the GPU tier (the settings users change
most, as in the chart's README example); `cpu.model` and `cpu.llamacpp` configure the CPU tier.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import GpuWait, LlamaCpp, ModelSpec, Resources, Stack
from llmctl.manifests import model_store
from llmctl.manifests.render import exposure
from llmctl.manifests.routing import federation, router_config
from llmctl.router.table import Backend, Tier, rendered_limits

CHART_DIR = PurePosixPath("charts/llm-router")
NODE_AGENT_NAMESPACE = "kube-system"


def values_file_name(cloud: CloudName, gpu: bool) -> str:
    return f"values-{cloud.value}-{'gpu' if gpu else 'cpu'}.yaml"


def _model(model: ModelSpec, volume: str, store_uri: str | None = None) -> dict[str, Any]:
    return {
        "name": model.name,
        "uri": model.uri,
        "path": model.path,
        "volume": volume,
        "storageSize": model.storage_size,
        "storageClassName": model.storage_class_name or "",
        "sha256": model.sha256 or "",
        "storeUri": store_uri or "",
        "parameters": model.parameters,
        "aliases": list(model.aliases),
    }


def _llamacpp(settings: LlamaCpp) -> dict[str, Any]:
    # Unset settings are left out: the chart then applies the same defaults as config.LlamaCpp.
    return settings.model_dump(mode="json", exclude_none=True)


def _resources(resources: Resources) -> dict[str, Any]:
    return resources.model_dump(mode="json", exclude_none=True)


def _backend(backend: Backend) -> dict[str, Any]:
    return {"costWeight": backend.cost_weight, "hourlyCostUsd": backend.hourly_cost_usd}


def _federation_values(stack: Stack, cloud: CloudName, values: dict[str, Any]) -> None:
    """router.expose and federation (issue 16)."""
    expose = stack.router.expose
    values["router"]["expose"] = {
        "enabled": expose.enabled,
        "kind": expose.kind,
        "host": exposure(stack, cloud)["host"] if expose.enabled else "",
        "ingressClassName": expose.ingress_class_name,
        "gateway": {
            "name": expose.gateway.name,
            "namespace": expose.gateway.namespace or "",
            "sectionName": expose.gateway.section_name or "",
        },
        "tls": {
            "secretName": expose.tls.secret_name,
            "clusterIssuer": expose.tls.cluster_issuer or "",
        },
    }
    table = federation(stack, cloud)
    values["federation"] = {
        "enabled": table is not None,
        "peers": [p.model_dump(mode="json", by_alias=True) for p in table.peers] if table else [],
        "peerKeySecret": stack.federation.peer_key_secret,
        "countPeerServedDemand": stack.federation.count_peer_served_demand,
    }


def helm_values(stack: Stack, cloud: CloudName, gpu: bool) -> dict[str, Any]:
    """The chart values that deploy what clusters/<cloud>/{base,overlays/gpu} deploys."""
    values = _helm_values(stack, cloud, gpu)
    _federation_values(stack, cloud, values)
    values["modelStore"] = _model_store_values(stack, cloud)
    _router_settings_values(stack, values["router"])
    return values


def _router_settings_values(stack: Stack, router: dict[str, Any]) -> None:
    """Named keys, their budgets' store and gpuWait (issue 31), under the Stack's own names;
    keys and store only when set, gpuWait `{}` (values.yaml's default) while it is the router's
    default: the chart then writes router.yaml's apiKeys and gpuWait as render does."""
    keys = stack.router.api_keys
    if keys.keys:
        router["apiKeys"]["keys"] = [
            k.model_dump(mode="json", by_alias=True, exclude_defaults=True) for k in keys.keys
        ]
    if keys.budget_store is not None:
        router["apiKeys"]["budgetStore"] = keys.budget_store.model_dump(mode="json", by_alias=True)
    wait = stack.router.gpu_wait
    router["gpuWait"] = {} if wait == GpuWait() else wait.model_dump(mode="json", by_alias=True)


def _model_store_values(stack: Stack, cloud: CloudName) -> dict[str, Any]:
    """How the llama pods read the cloud's model store (issue 30); empty without one."""
    if stack.model_store.of(cloud) is None:
        return {"region": "", "serviceAccountAnnotations": {}, "podLabels": {}}
    account = model_store.service_account(stack, cloud, {})
    env = {e["name"]: e["value"] for e in model_store.fetch_env(stack, cloud, stack.gpu.model)}
    return {
        "region": env.get("AWS_REGION", ""),
        "serviceAccountAnnotations": account["metadata"].get("annotations", {}),
        "podLabels": model_store.pod_labels(stack, cloud),
    }


def _helm_values(stack: Stack, cloud: CloudName, gpu: bool) -> dict[str, Any]:
    # The GPU tier's table entries are read even for a CPU file, so flipping gpu.enabled on it
    # gives the GPU overlay's router table.
    table = router_config(stack, cloud, gpu=True)
    backends = {b.tier: b for b in table.backends}
    images = stack.images
    return {
        "cloud": cloud.value,
        "images": {
            "llamaServer": images.llama_server,
            "llamaServerCuda": images.llama_server_cuda,
            "router": images.router,
            "modelFetcher": images.model_fetcher or "",
            "devicePlugin": images.device_plugin,
            "dcgmExporter": images.dcgm_exporter,
        },
        "modelDownload": {
            "tokenSecret": stack.model_download.token_secret,
            "tokenKey": stack.model_download.token_key,
        },
        "imagePullSecrets": list(stack.image_pull_secrets),
        "router": {
            "replicas": stack.router.replicas,
            "nodeSelector": {},
            "tolerations": [],
            "apiKeys": {
                "secretName": stack.router.api_keys.secret_name or "",
                "key": stack.router.api_keys.key,
            },
            "resources": _resources(stack.router.resources),
            "policy": {
                "gpuParameterThreshold": table.policy.gpu_parameter_threshold,
                "gpuComplexities": list(table.policy.gpu_complexities),
            },
            "limits": rendered_limits(table.limits),
            "healthCheck": table.health_check.model_dump(mode="json", by_alias=True),
        },
        "cpu": {
            "replicas": stack.cpu.replicas,
            "nodeSelector": {},
            "tolerations": [],
            "model": _model(
                stack.cpu.model,
                stack.cpu.model_volume,
                model_store.store_uri(stack, cloud, stack.cpu.model),
            ),
            "llamacpp": _llamacpp(stack.cpu.llamacpp),
            "resources": _resources(stack.cpu.resources),
            "backend": _backend(backends[Tier.CPU]),
        },
        "gpu": {
            "enabled": gpu,
            "resourceName": stack.gpu.resource_name,
            "count": stack.gpu.count,
            "replicas": stack.gpu.min_replicas,
            "maxReplicas": stack.gpu.max_replicas,
            "idleTimeoutSeconds": stack.gpu.idle_timeout_seconds,
            "metricsFailureReplicas": stack.gpu.metrics_failure_replicas,
            "accelerator": stack.gpu.gpu_of(cloud).label,
            "nodeSelector": {},
            "tolerations": [],
            "resources": _resources(stack.gpu.resources),
            "backend": _backend(backends[Tier.GPU]),
            # Node agents live in kube-system on both paths (one per cluster, no restricted PSS).
            # null: the chart deploys the plugin where the cloud needs one unless `gpu enable`'s
            # (kube-system/nvidia-device-plugin) runs, and its RuntimeClass unless `nvidia`
            # exists, so the README's flow (`gpu enable`, then `helm install`) runs one of each.
            "devicePlugin": {"enabled": None, "namespace": NODE_AGENT_NAMESPACE},
            "runtimeClass": {"enabled": None},
        },
        "observability": {
            "enabled": True,
            "prometheusUrl": stack.observability.prometheus_url,
            "prometheusNamespace": stack.observability.prometheus_namespace,
            "monitorLabels": dict(stack.observability.monitor_labels),
            "dcgmExporter": {"enabled": True, "namespace": NODE_AGENT_NAMESPACE},
        },
        "model": _model(
            stack.gpu.model,
            stack.gpu.model_volume,
            model_store.store_uri(stack, cloud, stack.gpu.model),
        ),
        "llamacpp": _llamacpp(stack.gpu.llamacpp),
    }


def values_files(
    stack: Stack, clouds: tuple[CloudName, ...] = catalog.CLOUDS
) -> dict[str, dict[str, Any]]:
    """Each cloud's two values files, by file name."""
    return {
        values_file_name(cloud, gpu): helm_values(stack, cloud, gpu)
        for cloud in clouds
        for gpu in (False, True)
    }
