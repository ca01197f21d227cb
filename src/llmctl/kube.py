"""The few Kubernetes API calls llmctl makes, with the official client (loaded lazily).

Server-side apply of the cluster's GPU objects (NVIDIA device plugin, `nvidia` RuntimeClass),
the GPU nodes with their allocatable GPUs, and the device plugin pods that are ready.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
    return ApplyRequest(path, (("fieldManager", FIELD_MANAGER), ("force", "true")), obj)


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
    except (ConfigException, OSError) as exc:
        raise LlmctlError(
            f"no usable kubeconfig: {exc}",
            hint=(f"run `{hint}`, " if hint else "")
            + "or point $KUBECONFIG (or --kubeconfig) at the cluster's kubeconfig"
            + (f"; {skip_flag} skips this step" if skip_flag else ""),
        ) from None


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
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_S)
    response.read()
    if not 200 <= response.status < 300:
        api.response_deserialize(response, {"2XX": "str"})  # raises ApiException
    return bytes(response.data).decode(errors="replace")


def apply(api: Any, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each object (field manager `llmctl`, conflicts forced); the results."""
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


def pod_log(api: Any, namespace: str, name: str) -> str:
    with _kube_errors(f"reading the log of pod {name} in {namespace}", POD_RIGHTS):
        return _call_text(api, f"/api/v1/namespaces/{namespace}/pods/{name}/log", [])


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
