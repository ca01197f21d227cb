"""The Kubernetes API calls llmctl makes, with the official client (loaded lazily).

Server-side apply (paths from `kube/kinds.py`), the GPU nodes with their allocatable GPUs, the
device plugin pods that are ready, and the pods and services of `llmctl test-inference`. Every
call goes through `call` inside `kube_errors`, which turns the client's exceptions into one
sentence and a hint naming the RBAC rights the caller needs.
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
from llmctl.kube.kinds import APPLY_CONTENT_TYPE, apply_request, kind_of

REQUEST_TIMEOUT_S = 30
NODES = kind_of("v1", "Node")
PODS = kind_of("v1", "Pod")
SERVICES = kind_of("v1", "Service")
EVENTS = kind_of("v1", "Event")
DEPLOYMENTS = kind_of("apps/v1", "Deployment")


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
def kube_errors(what: str, rights: str = GPU_SETUP_RIGHTS) -> Iterator[None]:
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


def call(
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


def call_text(api: Any, path: str, query: list[tuple[str, str]]) -> str:
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
        with kube_errors(f"applying {request.name}"):
            applied.append(
                call(
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
    with kube_errors("listing GPU nodes"):
        nodes = call(api, "GET", NODES.path(), [("labelSelector", label)])
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
    with kube_errors(f"listing pods {selector} in {namespace}"):
        pods = call(api, "GET", PODS.path(namespace=namespace), [("labelSelector", selector)])
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
    with kube_errors(f"creating pod {name} in {namespace}", POD_RIGHTS):
        return dict(call(api, "POST", PODS.path(namespace=namespace), [], dict(pod)))


def read_pod(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with kube_errors(f"reading pod {name} in {namespace}", POD_RIGHTS):
        return dict(call(api, "GET", PODS.path(name, namespace), []))


def pod_log(
    api: Any, namespace: str, name: str, container: str | None = None, timestamps: bool = False
) -> str:
    """The pod's log (of `container`; with `timestamps`, each line prefixed with the container
    runtime's RFC 3339 time, as `kubectl logs --timestamps`)."""
    query = [("container", container)] if container else []
    if timestamps:
        query.append(("timestamps", "true"))
    with kube_errors(f"reading the log of pod {name} in {namespace}", POD_RIGHTS):
        return call_text(api, PODS.path(name, namespace) + "/log", query)


def delete_pod(api: Any, namespace: str, name: str) -> bool:
    """Delete at once (grace period 0); False when it was already gone."""
    from kubernetes.client.exceptions import ApiException

    path = PODS.path(name, namespace)
    with kube_errors(f"deleting pod {name} in {namespace}", POD_RIGHTS):
        try:
            call(api, "DELETE", path, [("gracePeriodSeconds", "0")])
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def read_service(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with kube_errors(f"reading service {name} in {namespace}", FORWARD_RIGHTS):
        return dict(call(api, "GET", SERVICES.path(name, namespace), []))


def list_pods(api: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    with kube_errors(f"listing pods {selector} in {namespace}", FORWARD_RIGHTS):
        pods = call(api, "GET", PODS.path(namespace=namespace), [("labelSelector", selector)])
    return list(pods.get("items", []))


# --- a tier from zero: `llmctl test-inference --cold` -------------------------------------------

COLD_RIGHTS = (
    "to get deployments, patch deployments/scale, list pods and events, and get pods/log in the "
    "namespace"
)


def read_deployment(api: Any, namespace: str, name: str) -> dict[str, Any]:
    with kube_errors(f"reading deployment {name} in {namespace}", COLD_RIGHTS):
        return dict(call(api, "GET", DEPLOYMENTS.path(name, namespace), []))


def scale_deployment(api: Any, namespace: str, name: str, replicas: int) -> None:
    """Set the replica count through the scale subresource, as `kubectl scale` does."""
    path = DEPLOYMENTS.path(name, namespace) + "/scale"
    with kube_errors(f"scaling deployment {name} in {namespace}", COLD_RIGHTS):
        call(
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
    with kube_errors(f"listing the events of pod {name} in {namespace}", COLD_RIGHTS):
        found = call(api, "GET", EVENTS.path(namespace=namespace), [("fieldSelector", selector)])
    return list(found.get("items", []))


def get_or_none(
    api: Any, path: str, what: str, rights: str, absent: tuple[int, ...] = (404,)
) -> Any | None:
    """GET one object; None where the API answers one of the `absent` statuses (a CRD or a
    ConfigMap that is not there, or not ours to read)."""
    from kubernetes.client.exceptions import ApiException

    with kube_errors(what, rights):
        try:
            return call(api, "GET", path, [])
        except ApiException as exc:
            if exc.status in absent:
                return None
            raise
