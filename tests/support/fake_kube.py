"""A Kubernetes API stand-in for the calls llmctl makes: server-side apply, list nodes and pods.

Answers as the API server does: apply needs `application/apply-patch+yaml` and a fieldManager,
creates with 201 and updates with 200; lists filter by label selector; errors are `Status` objects.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class FakeKube:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    forbid_apply: bool = False
    _versions: Any = field(default_factory=lambda: itertools.count(100))

    def route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        if request.method == "PATCH":
            return self._apply(request)
        if request.method == "GET" and request.path == "/api/v1/nodes":
            return self._list("NodeList", self.nodes, request)
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and len(parts) == 5 and parts[4] == "pods":
            pods = [p for p in self.pods if p["metadata"].get("namespace") == parts[3]]
            return self._list("PodList", pods, request)
        return status(
            404, "NotFound", f"the server could not find the requested resource ({request.path})"
        )

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
