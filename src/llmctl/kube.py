"""The few Kubernetes API calls llmctl makes, with the official client (loaded lazily).

Server-side apply of the cluster's GPU objects (NVIDIA device plugin, `nvidia` RuntimeClass),
the GPU nodes with their allocatable GPUs, and the device plugin pods that are ready.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from llmctl import catalog
from llmctl.errors import LlmctlError
from llmctl.extras import install_hint

FIELD_MANAGER = "llmctl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
REQUEST_TIMEOUT_S = 30

# Kinds llmctl may apply that live outside namespaces; everything else needs metadata.namespace.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "RuntimeClass",
        "PriorityClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "StorageClass",
        "CustomResourceDefinition",
        "Node",
    }
)


@dataclass(frozen=True)
class ApplyRequest:
    """One server-side apply: PATCH this path with this object."""

    path: str
    query: tuple[tuple[str, str], ...]
    body: Mapping[str, Any]

    @property
    def name(self) -> str:
        meta = self.body["metadata"]
        ns = meta.get("namespace")
        return f"{self.body['kind']}/{meta['name']}" + (f" (namespace {ns})" if ns else "")

    def as_dict(self) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return {
            "method": "PATCH",
            "target": f"{self.path}?{query}",
            "headers": {"Content-Type": APPLY_CONTENT_TYPE},
            "body": dict(self.body),
        }


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + "s"


def apply_request(obj: Mapping[str, Any]) -> ApplyRequest:
    """The server-side apply request for one object (pure: no client, no call)."""
    api_version = str(obj["apiVersion"])
    kind = str(obj["kind"])
    meta = obj["metadata"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if kind in CLUSTER_SCOPED_KINDS:
        path = f"{base}/{_plural(kind)}/{meta['name']}"
    else:
        namespace = meta.get("namespace")
        if not namespace:
            raise LlmctlError(f"{kind}/{meta['name']} has no metadata.namespace to apply it in")
        path = f"{base}/namespaces/{namespace}/{_plural(kind)}/{meta['name']}"
    # No `force`: a field another manager owns (someone's own device plugin of the same name) is
    # a 409 conflict to report, not something to take over silently (review item 8).
    return ApplyRequest(path, (("fieldManager", FIELD_MANAGER),), obj)


@dataclass(frozen=True)
class GpuNode:
    name: str
    accelerator: str
    allocatable_gpus: int
    ready: bool


@dataclass(frozen=True)
class PodsReady:
    ready: int
    total: int


def api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    hint: str = "",
    skip_flag: str = "--skip-cluster-setup",
) -> Any:
    """The one place a Kubernetes client is built: from the user's kubeconfig. `skip_flag` is
    the caller's flag that does without the cluster ("" when there is none)."""
    try:
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.kube_config import new_client_from_config
    except ImportError:
        raise LlmctlError(
            "the Kubernetes client (kubernetes) is not installed",
            hint=install_hint("cloud"),
        ) from None
    try:
        return new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        # ValueError: UnicodeDecodeError from a file that is not text; YAMLError: not YAML.
        raise LlmctlError(
            f"no usable kubeconfig: {_kubeconfig_problem(exc, kubeconfig)}",
            hint=_kubeconfig_hint(hint, skip_flag),
        ) from None


def _kubeconfig_problem(exc: Exception, kubeconfig: str | None) -> str:
    if isinstance(exc, UnicodeDecodeError):
        import os

        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return f"{where} is not UTF-8 text"
    return str(exc)


def _kubeconfig_hint(command: str, skip_flag: str) -> str:
    """`run <command>, or point ...; <flag> skips this step`, each part only when there is one."""
    point = "point $KUBECONFIG (or --kubeconfig) at the cluster's kubeconfig"
    text = f"run `{command}`, or {point}" if command else point
    return text + (f"; {skip_flag} skips this step" if skip_flag else "")


# What `llmctl gpu enable/status` needs; other callers name their own rights.
GPU_SETUP_RIGHTS = (
    "to patch DaemonSets and RuntimeClasses and to list nodes and pods (cluster-admin has them)"
)


@contextmanager
def _kube_errors(what: str, rights: str = GPU_SETUP_RIGHTS) -> Iterator[None]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        reason = _status_message(exc)
        if exc.status == 409:
            raise LlmctlError(
                f"{what} conflicts with another field manager: {reason}",
                hint="another tool manages this object; llmctl leaves it alone. Remove or rename "
                "that object, or pass --skip-cluster-setup and manage the GPU objects yourself",
            ) from None
        if exc.status in (401, 403):
            raise LlmctlError(
                f"the cluster refused {what} (HTTP {exc.status}): {reason}",
                hint=f"your Kubernetes user needs RBAC rights {rights}",
            ) from None
        raise LlmctlError(f"{what} failed (HTTP {exc.status}): {reason}") from None
    except HTTPError as exc:
        raise LlmctlError(
            f"cannot reach the Kubernetes API for {what}: {exc}",
            hint="check that your kubeconfig's current context is the right cluster",
        ) from None


def _status_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _call(
    api: Any,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: Any = None,
    content_type: str | None = None,
) -> Any:
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_S)
    response.read()
    return api.response_deserialize(response, {"2XX": "object"}).data


def _call_text(api: Any, path: str, query: list[tuple[str, str]]) -> str:
    """A GET whose answer is text (a pod's log), not JSON."""
    serialized = api.param_serialize(
        method="GET",
        resource_path=path,
        query_params=query,
        # The API server refuses `Accept: text/plain` (406: it offers only JSON, YAML and
        # protobuf) yet answers a log as text/plain; the official client asks for */*.
        header_params={"Accept": "*/*"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_S)
    response.read()
    if not 200 <= response.status < 300:
        api.response_deserialize(response, {"2XX": "str"})  # raises ApiException
    return bytes(response.data).decode(errors="replace")


def apply(api: Any, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each object (field manager `llmctl`, conflicts refused); the results."""
    applied = []
    for obj in objects:
        request = apply_request(obj)
        with _kube_errors(f"applying {request.name}"):
            applied.append(
                _call(
                    api,
                    "PATCH",
                    request.path,
                    list(request.query),
                    dict(request.body),
                    APPLY_CONTENT_TYPE,
                )
            )
    return applied


def gpu_nodes(api: Any, resource: str = "nvidia.com/gpu") -> list[GpuNode]:
    """Nodes carrying llmctl's accelerator label, with their allocatable GPUs."""
    label = catalog.GPU_NODE_ACCELERATOR_LABEL
    with _kube_errors("listing GPU nodes"):
        nodes = _call(api, "GET", "/api/v1/nodes", [("labelSelector", label)])
    result = []
    for node in nodes.get("items", []):
        status = node.get("status", {})
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
        result.append(
            GpuNode(
                name=node["metadata"]["name"],
                accelerator=node["metadata"].get("labels", {}).get(label, ""),
                allocatable_gpus=int(status.get("allocatable", {}).get(resource, "0")),
                ready=conditions.get("Ready") == "True",
            )
        )
    return result


def pods_ready(api: Any, namespace: str, selector: str) -> PodsReady:
    """How many pods matching the selector are Ready, of how many."""
    with _kube_errors(f"listing pods {selector} in {namespace}"):
        pods = _call(
            api, "GET", f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", selector)]
        )
    items = pods.get("items", [])
    ready = sum(
        1
        for pod in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
    )
    return PodsReady(ready, len(items))


def device_plugin_pods(objects: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Namespace and label selector of the device plugin DaemonSet among the applied objects."""
    for obj in objects:
        if obj.get("kind") == "DaemonSet":
            labels = obj["spec"]["selector"]["matchLabels"]
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return str(obj["metadata"]["namespace"]), selector
    return None


# --- pods and services: `llmctl test-inference --gpu-check` and `--cloud` -----------------------

POD_RIGHTS = "to create, get, delete pods and get pods/log in the namespace"
FORWARD_RIGHTS = "to get services, list pods and create pods/portforward in the namespace"


def create_pod(api: Any, pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with _kube_errors(f"creating pod {name} in {namespace}", POD_RIGHTS):
        return dict(_call(api, "POST", f"/api/v1/namespaces/{namespace}/pods", [], dict(pod)))


def read_pod(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with _kube_errors(f"reading pod {name} in {namespace}", POD_RIGHTS):
        return dict(_call(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{name}", []))


def pod_log(
    api: Any, namespace: str, name: str, container: str | None = None, timestamps: bool = False
) -> str:
    """The pod's log (of `container`; with `timestamps`, each line prefixed with the container
    runtime's RFC 3339 time, as `kubectl logs --timestamps`)."""
    query = [("container", container)] if container else []
    if timestamps:
        query.append(("timestamps", "true"))
    with _kube_errors(f"reading the log of pod {name} in {namespace}", POD_RIGHTS):
        return _call_text(api, f"/api/v1/namespaces/{namespace}/pods/{name}/log", query)


def delete_pod(api: Any, namespace: str, name: str) -> bool:
    """Delete at once (grace period 0); False when it was already gone."""
    from kubernetes.client.exceptions import ApiException

    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    with _kube_errors(f"deleting pod {name} in {namespace}", POD_RIGHTS):
        try:
            _call(api, "DELETE", path, [("gracePeriodSeconds", "0")])
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def read_service(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with _kube_errors(f"reading service {name} in {namespace}", FORWARD_RIGHTS):
        return dict(_call(api, "GET", f"/api/v1/namespaces/{namespace}/services/{name}", []))


def list_pods(api: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    with _kube_errors(f"listing pods {selector} in {namespace}", FORWARD_RIGHTS):
        pods = _call(
            api, "GET", f"/api/v1/namespaces/{namespace}/pods", [("labelSelector", selector)]
        )
    return list(pods.get("items", []))


# --- a tier from zero: `llmctl test-inference --cold` -------------------------------------------

COLD_RIGHTS = (
    "to get deployments, patch deployments/scale, list pods and events, and get pods/log in the "
    "namespace"
)


def read_deployment(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with _kube_errors(f"reading deployment {name} in {namespace}", COLD_RIGHTS):
        return dict(
            _call(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}", [])
        )


def scale_deployment(api: Any, namespace: str, name: str, replicas: int) -> None:
    """Set the replica count through the scale subresource, as `kubectl scale` does."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
    with _kube_errors(f"scaling deployment {name} in {namespace}", COLD_RIGHTS):
        _call(
            api,
            "PATCH",
            path,
            [],
            {"spec": {"replicas": replicas}},
            "application/merge-patch+json",
        )


def pod_events(api: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    """The events about one pod (the scheduler's and the kubelet's), oldest first."""
    selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
    with _kube_errors(f"listing the events of pod {name} in {namespace}", COLD_RIGHTS):
        found = _call(
            api, "GET", f"/api/v1/namespaces/{namespace}/events", [("fieldSelector", selector)]
        )
    return list(found.get("items", []))


# --- preflight: what scale-from-zero GPU nodes need on this cluster (`llmctl gpu enable/status`) --

PREFLIGHT_RIGHTS = (
    "to list StorageClasses, DaemonSets, Deployments and RuntimeClasses and to get "
    "CustomResourceDefinitions (cluster-admin has them; `view` plus CRD read is enough)"
)
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Images of NVIDIA's device plugin (static manifest, Helm chart, GPU Operator) and GKE's own.
DEVICE_PLUGIN_IMAGES = ("k8s-device-plugin", "nvidia-gpu-device-plugin")
GPU_OPERATOR_CRD = "clusterpolicies.nvidia.com"
KARPENTER_CRD = "nodepools.karpenter.sh"


@dataclass(frozen=True)
class DevicePlugin:
    namespace: str
    name: str
    image: str
    by_llmctl: bool
    ready: int = 0

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster already runs that scale-from-zero GPU nodes depend on."""

    default_storage_class: str | None
    device_plugins: tuple[DevicePlugin, ...]
    gpu_operator: bool
    autoscalers: tuple[str, ...]
    karpenter: bool
    runtime_classes: Mapping[str, str]  # name -> handler


def _items(api: Any, path: str, what: str) -> list[dict[str, Any]]:
    with _kube_errors(what, PREFLIGHT_RIGHTS):
        return list(_call(api, "GET", path, []).get("items", []))


def default_storage_class(api: Any) -> str | None:
    """The StorageClass annotated as the cluster's default (the model cache's PVCs use it)."""
    for sc in _items(api, "/apis/storage.k8s.io/v1/storageclasses", "listing StorageClasses"):
        annotations = sc["metadata"].get("annotations") or {}
        if annotations.get(DEFAULT_CLASS_ANNOTATION) == "true":
            return str(sc["metadata"]["name"])
    return None


def nvidia_device_plugins(api: Any) -> list[DevicePlugin]:
    """Every DaemonSet in the cluster that runs an NVIDIA device plugin image, llmctl's included."""
    found = []
    for ds in _items(api, "/apis/apps/v1/daemonsets", "listing DaemonSets"):
        containers = ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        images = [str(c.get("image", "")) for c in containers]
        image = next((i for i in images if any(p in i for p in DEVICE_PLUGIN_IMAGES)), None)
        if image is None:
            continue
        meta = ds["metadata"]
        labels = meta.get("labels") or {}
        found.append(
            DevicePlugin(
                namespace=str(meta.get("namespace", "")),
                name=str(meta["name"]),
                image=image,
                by_llmctl=labels.get("app.kubernetes.io/managed-by") == "llmctl",
                ready=int(ds.get("status", {}).get("numberReady", 0) or 0),
            )
        )
    return found


def crd_exists(api: Any, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    with _kube_errors(f"reading CustomResourceDefinition {name}", PREFLIGHT_RIGHTS):
        try:
            _call(api, "GET", path, [])
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def cluster_autoscalers(api: Any) -> list[str]:
    """Deployments that run cluster-autoscaler (any namespace, any chart's name for it)."""
    found = []
    for deploy in _items(api, "/apis/apps/v1/deployments", "listing Deployments"):
        meta = deploy["metadata"]
        containers = (
            deploy.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        )
        images = " ".join(str(c.get("image", "")) for c in containers)
        if "cluster-autoscaler" in images or "cluster-autoscaler" in meta["name"]:
            found.append(f"{meta.get('namespace', '')}/{meta['name']}")
    return found


def runtime_classes(api: Any) -> dict[str, str]:
    path = "/apis/node.k8s.io/v1/runtimeclasses"
    return {
        str(rc["metadata"]["name"]): str(rc.get("handler", ""))
        for rc in _items(api, path, "listing RuntimeClasses")
    }


def cluster_facts(api: Any) -> ClusterFacts:
    return ClusterFacts(
        default_storage_class=default_storage_class(api),
        device_plugins=tuple(nvidia_device_plugins(api)),
        gpu_operator=crd_exists(api, GPU_OPERATOR_CRD),
        autoscalers=tuple(cluster_autoscalers(api)),
        karpenter=crd_exists(api, KARPENTER_CRD),
        runtime_classes=runtime_classes(api),
    )


@dataclass(frozen=True)
class Check:
    """One preflight finding: what is there or missing, and how to add it."""

    name: str
    ok: bool
    message: str
    fix: str = ""
    # False: scale-from-zero cannot work until this is fixed.
    blocks_scale_from_zero: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "ok": self.ok,
            "message": self.message,
            "fix": self.fix,
            "blocksScaleFromZero": self.blocks_scale_from_zero,
        }


def _foreign_plugins(facts: ClusterFacts) -> list[DevicePlugin]:
    return [p for p in facts.device_plugins if not p.by_llmctl]


def preflight(cloud: catalog.CloudName, facts: ClusterFacts) -> list[Check]:
    """What this cluster has and lacks for llmctl's scale-from-zero GPU pool (pure)."""
    facts_of = catalog.CLOUD_FACTS[cloud]
    checks = []
    if facts.default_storage_class:
        checks.append(
            Check("default StorageClass", True, f"{facts.default_storage_class} is the default")
        )
    else:
        checks.append(
            Check(
                "default StorageClass",
                False,
                "no StorageClass is marked default: the model cache's PersistentVolumeClaims "
                "stay Pending",
                fix='kubectl patch storageclass NAME -p \'{"metadata": {"annotations": '
                f'{{"{DEFAULT_CLASS_ANNOTATION}": "true"}}}}}}\'',
            )
        )
    foreign = _foreign_plugins(facts)
    ours = [p for p in facts.device_plugins if p.by_llmctl]
    if facts_of.needs_device_plugin and ours and (facts.gpu_operator or foreign):
        # Installed after llmctl's (review N14): both would register nvidia.com/gpu on a node.
        who = ", ".join(p.where for p in foreign) or "the NVIDIA GPU Operator"
        checks.append(
            Check(
                "NVIDIA device plugin",
                False,
                f"two device plugins: {who} and llmctl's own "
                f"({', '.join(p.where for p in ours)}) would both register nvidia.com/gpu on "
                "every GPU node",
                fix="; ".join(f"kubectl delete daemonset -n {p.namespace} {p.name}" for p in ours)
                + " (llmctl's; the other one stays and llmctl applies no new one)",
                blocks_scale_from_zero=True,
            )
        )
    elif facts_of.needs_device_plugin:
        if facts.gpu_operator or foreign:
            who = ", ".join(p.where for p in foreign) or "the NVIDIA GPU Operator"
            checks.append(
                Check(
                    "NVIDIA device plugin",
                    True,
                    f"already runs ({who}): llmctl does not apply a second one, which would "
                    "fight it for nvidia.com/gpu",
                )
            )
        elif ours:
            checks.append(
                Check(
                    "NVIDIA device plugin",
                    True,
                    f"llmctl's runs ({', '.join(p.where for p in ours)}); llmctl keeps it applied",
                )
            )
        else:
            checks.append(
                Check("NVIDIA device plugin", True, "none yet: llmctl applies its DaemonSet")
            )
    elif foreign and any("k8s-device-plugin" in p.image for p in foreign):
        checks.append(
            Check(
                "NVIDIA device plugin",
                False,
                f"{', '.join(p.where for p in foreign)} runs NVIDIA's plugin beside "
                f"{facts_of.display}'s own: both register nvidia.com/gpu",
                fix="remove the extra plugin; " + facts_of.device_plugin_reason,
            )
        )
    else:
        checks.append(Check("NVIDIA device plugin", True, facts_of.device_plugin_reason))
    if cloud is catalog.CloudName.AWS:
        checks.append(_autoscaler_check(facts))
    handler = facts.runtime_classes.get("nvidia")
    if not facts_of.nvidia_runtime_handler:
        if handler == "nvidia":
            checks.append(
                Check(
                    "RuntimeClass nvidia",
                    False,
                    f"exists, but {facts_of.display} nodes have no `nvidia` containerd handler "
                    "(pods using it fail at sandbox creation)",
                    fix="kubectl delete runtimeclass nvidia (if nothing else needs it); "
                    + facts_of.runtime_reason,
                )
            )
        else:
            checks.append(
                Check("RuntimeClass nvidia", True, "not applied: " + facts_of.runtime_reason)
            )
    else:
        checks.append(Check("RuntimeClass nvidia", True, facts_of.runtime_reason))
    return checks


def _autoscaler_check(facts: ClusterFacts) -> Check:
    name = "node autoscaler"
    if facts.autoscalers:
        return Check(
            name,
            True,
            f"cluster-autoscaler runs ({', '.join(facts.autoscalers)}); it needs ASG "
            "auto-discovery and eks:DescribeNodegroup to scale the group from zero",
        )
    if facts.karpenter:
        return Check(
            name,
            False,
            "Karpenter (or EKS Auto Mode) runs but no cluster-autoscaler: Karpenter does not "
            "scale managed node groups, so this group stays at zero",
            fix="use a Karpenter NodePool for the GPU nodes instead (docs/gpu.md shows one), "
            "or install cluster-autoscaler",
            blocks_scale_from_zero=True,
        )
    return Check(
        name,
        False,
        "no cluster-autoscaler Deployment: EKS does not scale a managed node group from zero "
        "on its own",
        fix="install cluster-autoscaler 1.24+ with --node-group-auto-discovery="
        "asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/CLUSTER and "
        "eks:DescribeNodegroup in its IAM policy (docs/gpu.md)",
        blocks_scale_from_zero=True,
    )


def setup_objects(
    cloud: catalog.CloudName, objects: list[dict[str, Any]], facts: ClusterFacts | None
) -> list[dict[str, Any]]:
    """The GPU objects llmctl should apply here: no RuntimeClass where the nodes have no such
    handler, no device plugin where one (or the GPU Operator) already runs."""
    facts_of = catalog.CLOUD_FACTS[cloud]
    keep = []
    for obj in objects:
        if obj["kind"] == "RuntimeClass" and not facts_of.nvidia_runtime_handler:
            continue
        if (
            obj["kind"] == "DaemonSet"
            and facts is not None
            and (facts.gpu_operator or _foreign_plugins(facts))
        ):
            continue
        keep.append(obj)
    return keep


def cluster_blockers(
    cloud: catalog.CloudName, facts: ClusterFacts, managed_plugin: bool = False
) -> list[str]:
    """Why the cluster would not bring a GPU node up from zero and use it (empty: it would).
    `managed_plugin`: the cloud runs the device plugin on the pool's nodes itself."""
    reasons = [c.message for c in preflight(cloud, facts) if c.blocks_scale_from_zero]
    needs_plugin = catalog.CLOUD_FACTS[cloud].needs_device_plugin and not managed_plugin
    if needs_plugin and not (facts.gpu_operator or facts.device_plugins):
        reasons.append(
            "no NVIDIA device plugin DaemonSet: a new GPU node would offer no nvidia.com/gpu "
            "(run `llmctl gpu enable` without --skip-cluster-setup)"
        )
    return reasons


# --- why a GPU pool did not grow: what the node autoscalers report (`llmctl gpu status`) --------

# The events cluster-autoscaler records on a pending pod: a scale-up it tried and the cloud
# refused ("Node scale up in zones us-central1-c associated with this pod failed: GCE quota
# exceeded"), or none tried ("pod didn't trigger scale-up: 1 max node group size reached"); the
# reasons are constants in cluster-autoscaler's processors/status/eventing_scale_up_processor.go.
SCALE_UP_EVENT_REASONS = ("FailedScaleUp", "NotTriggerScaleUp")
# The ConfigMap cluster-autoscaler writes its status to, in its own namespace (`--status-config-
# map-name`, default cluster-autoscaler-status; YAML since 1.30: clusterstate/api/types.go).
AUTOSCALER_STATUS_CONFIGMAP = "cluster-autoscaler-status"
NODECLAIMS_PATH = "/apis/karpenter.sh/v1/nodeclaims"
AUTOSCALER_RIGHTS = (
    "to list pods and events, get ConfigMaps in the autoscaler's namespace and list "
    "karpenter.sh NodeClaims (`view` has them)"
)


@dataclass(frozen=True)
class ScaleUpReason:
    """One thing a node autoscaler said about why no GPU node came up."""

    source: str  # where it was read: an event on a pod, the status ConfigMap, a NodeClaim
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def _requests_resource(pod: Mapping[str, Any], resource: str) -> bool:
    for container in pod.get("spec", {}).get("containers", []):
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            if resource in (resources.get(kind) or {}):
                return True
    return False


def pending_gpu_pods(api: Any, resource: str) -> list[tuple[str, str]]:
    """(namespace, name) of every pending pod that asks for the GPU resource."""
    with _kube_errors("listing pending pods", AUTOSCALER_RIGHTS):
        pods = _call(api, "GET", "/api/v1/pods", [("fieldSelector", "status.phase=Pending")])
    return [
        (str(p["metadata"].get("namespace", "")), str(p["metadata"]["name"]))
        for p in pods.get("items", [])
        if _requests_resource(p, resource)
    ]


def scale_up_events(api: Any, pods: list[tuple[str, str]]) -> list[ScaleUpReason]:
    """cluster-autoscaler's FailedScaleUp / NotTriggerScaleUp events on these pods, newest last."""
    wanted = set(pods)
    found: list[tuple[str, ScaleUpReason]] = []
    for reason in SCALE_UP_EVENT_REASONS:
        with _kube_errors(f"listing {reason} events", AUTOSCALER_RIGHTS):
            events = _call(api, "GET", "/api/v1/events", [("fieldSelector", f"reason={reason}")])
        for event in events.get("items", []):
            involved = event.get("involvedObject") or {}
            where = (str(involved.get("namespace", "")), str(involved.get("name", "")))
            if involved.get("kind") != "Pod" or where not in wanted:
                continue
            when = str(event.get("lastTimestamp") or event.get("eventTime") or "")
            source = f"{reason} on pod {where[0]}/{where[1]}"
            found.append((when, ScaleUpReason(source, str(event.get("message", "")).strip())))
    unique: dict[str, ScaleUpReason] = {}
    for _, item in sorted(found, key=lambda pair: pair[0]):
        unique[item.message] = item  # one line per distinct message: a pod gets one per loop
    return list(unique.values())


def autoscaler_backoffs(api: Any, namespaces: list[str], pool: str) -> list[ScaleUpReason]:
    """Node groups of this pool that cluster-autoscaler's status ConfigMap shows backing off
    scale-up, with the error that caused it (YAML status of CA 1.30+; older text ignored)."""
    import yaml
    from kubernetes.client.exceptions import ApiException

    found = []
    for namespace in dict.fromkeys([*namespaces, "kube-system"]):
        path = f"/api/v1/namespaces/{namespace}/configmaps/{AUTOSCALER_STATUS_CONFIGMAP}"
        with _kube_errors(f"reading ConfigMap {namespace}/{AUTOSCALER_STATUS_CONFIGMAP}"):
            try:
                config_map = _call(api, "GET", path, [])
            except ApiException as exc:
                if exc.status in (403, 404):
                    continue
                raise
        try:
            status = yaml.safe_load((config_map.get("data") or {}).get("status", "")) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(status, dict):
            continue  # the pre-1.30 free-text format
        for group in status.get("nodeGroups") or []:
            name = str(group.get("name", ""))
            scale_up = group.get("scaleUp") or {}
            if pool not in name or scale_up.get("status") != "Backoff":
                continue
            info = scale_up.get("backoffInfo") or {}
            detail = ": ".join(
                str(v) for v in (info.get("errorCode"), info.get("errorMessage")) if v
            )
            found.append(
                ScaleUpReason(
                    f"cluster-autoscaler status ({namespace}/{AUTOSCALER_STATUS_CONFIGMAP})",
                    f"node group {name} backs off scale-up" + (f": {detail}" if detail else ""),
                )
            )
    return found


def nodeclaim_failures(api: Any, resource: str) -> list[ScaleUpReason]:
    """Karpenter NodeClaims for the GPU resource with a condition that is not True (Launched,
    Registered, Initialized: karpenter.sh/v1 NodeClaim status.conditions)."""
    from kubernetes.client.exceptions import ApiException

    with _kube_errors("listing Karpenter NodeClaims", AUTOSCALER_RIGHTS):
        try:
            claims = _call(api, "GET", NODECLAIMS_PATH, [])
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
    found = []
    for claim in claims.get("items", []):
        requests = (claim.get("spec", {}).get("resources") or {}).get("requests") or {}
        if resource not in requests:
            continue
        for condition in claim.get("status", {}).get("conditions") or []:
            if condition.get("status") == "False" and condition.get("message"):
                found.append(
                    ScaleUpReason(
                        f"Karpenter NodeClaim {claim['metadata']['name']}",
                        f"{condition.get('type')} {condition.get('reason', '')}: "
                        f"{condition['message']}".replace("  ", " "),
                    )
                )
    return found


def scale_up_reasons(
    api: Any, facts: ClusterFacts, resource: str, pool: str
) -> list[ScaleUpReason]:
    """Why the node autoscalers did not bring up a GPU node: the events on pending GPU pods,
    cluster-autoscaler's status ConfigMap and, where Karpenter runs, its NodeClaims."""
    reasons = []
    pods = pending_gpu_pods(api, resource)
    if pods:
        reasons += scale_up_events(api, pods)
    namespaces = [a.split("/", 1)[0] for a in facts.autoscalers]
    reasons += autoscaler_backoffs(api, namespaces, pool)
    if facts.karpenter:
        reasons += nodeclaim_failures(api, resource)
    return reasons
