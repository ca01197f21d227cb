"""A Kubernetes API stand-in for the calls llmctl makes: server-side apply, list nodes and pods,
create/read/delete a pod and read its log, read a Service, and port-forward to a pod.

Answers as the API server does: apply needs `application/apply-patch+yaml` and a fieldManager,
creates with 201 and updates with 200; lists filter by label selector; a created pod goes through
the statuses `pod_script` lists, one per read (the kubelet's part); logs are text/plain; errors
are `Status` objects.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests.build import built_objects
from tests.support.http_fake import Request, Response

TOKEN = "test-token"


def status(code: int, reason: str, message: str) -> Response:
    return Response(
        code,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


def pod_status(phase: str, node: str | None = None, **container_state: Any) -> dict[str, Any]:
    """A pod's status as the kubelet reports it; `container_state` is e.g.
    terminated={"exitCode": 0, "reason": "Completed"} or waiting={"reason": "ImagePullBackOff"}."""
    scheduled = node is not None
    result: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "PodScheduled", "status": "True" if scheduled else "False"}],
    }
    if not scheduled:
        result["conditions"][0].update(
            reason="Unschedulable",
            message="0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
        )
    if container_state:
        result["containerStatuses"] = [{"name": "nvidia-smi", "state": container_state}]
    return {"status": result, "node": node}


SUCCEEDED_SCRIPT = [
    pod_status("Pending"),
    pod_status("Pending", "gpu-node-1", waiting={"reason": "ContainerCreating"}),
    pod_status("Succeeded", "gpu-node-1", terminated={"exitCode": 0, "reason": "Completed"}),
]


@dataclass
class FakeKube:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    forbid_apply: bool = False
    forbid_pods: bool = False
    # Statuses a created pod goes through, one per GET; the last one stays.
    pod_script: list[dict[str, Any]] = field(default_factory=lambda: list(SUCCEEDED_SCRIPT))
    pod_log: str = ""
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Port-forward: "namespace/pod:port" -> (host, port) a real server listens on.
    forwards: dict[str, tuple[str, int]] = field(default_factory=dict)
    _versions: Any = field(default_factory=lambda: itertools.count(100))
    _reads: dict[str, int] = field(default_factory=dict)

    def route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        if request.method == "PATCH":
            return self._apply(request)
        if request.method == "GET" and request.path == "/api/v1/nodes":
            return self._list("NodeList", self.nodes, request)
        parts = request.path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            if request.method == "POST":
                return self._create_pod(parts[3], request)
            if request.method == "GET":
                pods = [p for p in self.pods if p["metadata"].get("namespace") == parts[3]]
                return self._list("PodList", pods, request)
        if len(parts) >= 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace, name, sub = parts[3], parts[5], parts[6] if len(parts) > 6 else ""
            found = self._pod(namespace, name)
            if found is None:
                return status(404, "NotFound", f'pods "{name}" not found')
            if request.method == "GET" and sub == "":
                return Response(200, self._advance(found))
            if request.method == "GET" and sub == "log":
                return self._log(found)
            if request.method == "DELETE" and sub == "":
                self.pods.remove(found)
                self.deleted.append(name)
                return Response(200, found)
            if request.method == "GET" and sub == "portforward":
                return self._portforward(namespace, name, request)
        if (
            request.method == "GET"
            and len(parts) == 6
            and parts[:3] == ["api", "v1", "namespaces"]
            and parts[4] == "services"
        ):
            for svc in self.services:
                meta = svc["metadata"]
                if meta.get("namespace") == parts[3] and meta["name"] == parts[5]:
                    return Response(200, svc)
            return status(404, "NotFound", f'services "{parts[5]}" not found')
        return status(
            404, "NotFound", f"the server could not find the requested resource ({request.path})"
        )

    def _pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        for found in self.pods:
            meta = found["metadata"]
            if meta.get("namespace") == namespace and meta["name"] == name:
                return found
        return None

    def _create_pod(self, namespace: str, request: Request) -> Response:
        body = request.body
        if self.forbid_pods:
            return status(
                403,
                "Forbidden",
                f'pods is forbidden: User "limited" cannot create '
                f'resource "pods" in API group "" in the namespace "{namespace}"',
            )
        if body.get("kind") != "Pod" or body.get("metadata", {}).get("namespace") != namespace:
            return status(400, "BadRequest", "the namespace of the object does not match the URL")
        name = body["metadata"]["name"]
        if self._pod(namespace, name) is not None:
            return status(409, "AlreadyExists", f'pods "{name}" already exists')
        stored = copy.deepcopy(body)
        stored["metadata"]["uid"] = f"uid-pod-{len(self.created)}"
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        stored["status"] = {"phase": "Pending"}
        self.created.append(copy.deepcopy(stored))
        self.pods.append(stored)
        return Response(201, stored)

    def _advance(self, found: dict[str, Any]) -> dict[str, Any]:
        name = found["metadata"]["name"]
        step = self._reads.get(name, 0)
        self._reads[name] = step + 1
        scripted = self.pod_script[min(step, len(self.pod_script) - 1)]
        found["status"] = copy.deepcopy(scripted["status"])
        if scripted["node"]:
            found["spec"]["nodeName"] = scripted["node"]
        return found

    def _log(self, found: dict[str, Any]) -> Response:
        name = found["metadata"]["name"]
        if found.get("status", {}).get("phase") in (None, "Pending"):
            return status(
                400,
                "BadRequest",
                f'container "nvidia-smi" in pod "{name}" is waiting to start: ContainerCreating',
            )
        return Response(200, raw=self.pod_log.encode(), content_type="text/plain")

    def _portforward(self, namespace: str, name: str, request: Request) -> Response:
        from tests.support.fake_portforward import portforward_response

        return portforward_response(self.forwards, namespace, name, request)

    def _list(self, kind: str, items: list[dict[str, Any]], request: Request) -> Response:
        selector = request.query.get("labelSelector", "")
        chosen = [i for i in items if _matches(i["metadata"].get("labels", {}), selector)]
        return Response(
            200,
            {
                "kind": kind,
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": chosen,
            },
        )

    def _apply(self, request: Request) -> Response:
        if request.content_type != "application/apply-patch+yaml":
            return status(
                415, "UnsupportedMediaType", f"unsupported patch type {request.content_type}"
            )
        if not request.query.get("fieldManager"):
            return status(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        body = request.body
        name = body["metadata"]["name"]
        if not request.path.endswith("/" + name):
            return status(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if self.forbid_apply:
            user = "system:serviceaccount:default:limited"
            return status(
                403,
                "Forbidden",
                f'{body["kind"].lower()}s "{name}" is forbidden: User "{user}" cannot patch '
                "resource in API group",
            )
        existing = self.objects.get(request.path)
        stored = copy.deepcopy(body)
        meta = stored.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        meta["uid"] = existing["metadata"]["uid"] if existing else f"uid-{len(self.objects)}"
        meta["managedFields"] = [{"manager": request.query["fieldManager"], "operation": "Apply"}]
        self.objects[request.path] = stored
        return Response(200 if existing else 201, stored)


def node(name: str, labels: dict[str, str], gpus: str = "1", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"cpu": "4", "nvidia.com/gpu": gpus},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(name: str, namespace: str, labels: dict[str, str], ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def kubeconfig(url: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
contexts:
- name: test
  context:
    cluster: test
    user: test
current-context: test
users:
- name: test
  user:
    token: {TOKEN}
"""


def router_objects(cloud: CloudName = CloudName.AWS) -> tuple[dict[str, Any], dict[str, Any]]:
    objects = built_objects(Stack(), cloud, gpu=False)
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "llm-router"
    )
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "llm-router"
    )
    return service, deployment


def router_pod(deployment: dict[str, Any], name: str, ready: bool = True) -> dict[str, Any]:
    """A pod of the router Deployment, as the API server lists it."""
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }
