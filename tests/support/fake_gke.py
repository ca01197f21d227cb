"""A GKE REST API stand-in (container.googleapis.com/v1) for the calls llmctl makes.

Answers as GKE does for `$alt=json;enum-encoding=int` requests: enums as integers, mutations
return GKE's own `Operation`, which `get_operation` shows RUNNING once, then DONE; errors are
Google's JSON error bodies (`{"error": {"code", "message", "status"}}`).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_fake import Request, Response

# Enum numbers from the v1 API reference.
OP_RUNNING, OP_DONE = 2, 3
POOL_PROVISIONING, POOL_RUNNING, POOL_RECONCILING, POOL_STOPPING = 1, 2, 4, 5
CREATE_NODE_POOL, DELETE_NODE_POOL, SET_NODE_POOL_SIZE, SET_NODE_POOL_AUTOSCALING = 7, 8, 14, 13


def google_error(code: int, status: str, message: str) -> Response:
    return Response(code, {"error": {"code": code, "message": message, "status": status}})


@dataclass
class Operation:
    name: str
    op_type: int
    target: str
    polls_left: int
    on_done: Any
    error: dict[str, Any] | None = None

    def body(self, location: str) -> dict[str, Any]:
        done = self.polls_left <= 0
        out: dict[str, Any] = {
            "name": self.name,
            "operationType": self.op_type,
            "status": OP_DONE if done else OP_RUNNING,
            "selfLink": f"https://container.googleapis.com/v1/{location}/operations/{self.name}",
            "targetLink": f"https://container.googleapis.com/v1/{self.target}",
            "location": location.split("/")[-1],
            "startTime": "2026-01-01T00:00:00Z",
        }
        if done:
            out["endTime"] = "2026-01-01T00:01:00Z"
            if self.error:
                out["error"] = self.error
                out["statusMessage"] = self.error["message"]
        return out


@dataclass
class FakeGke:
    project: str = "proj"
    location: str = "us-central1"
    clusters: set[str] = field(default_factory=lambda: {"llm-gcp"})
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    forbidden: str | None = None  # the permission GKE says is missing
    create_error: dict[str, Any] | None = None  # an Operation error for create
    create_http_error: Response | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def prefix(self) -> str:
        return f"/v1/projects/{self.project}/locations/{self.location}"

    def route(self, request: Request) -> Response:
        if not request.path.startswith(self.prefix):
            return google_error(404, "NOT_FOUND", f"Not found: {request.path}.")
        rest = request.path[len(self.prefix) :].strip("/").split("/")
        location = self.prefix.removeprefix("/v1/")
        if rest[0] == "operations" and len(rest) == 2 and request.method == "GET":
            op = self.operations.get(rest[1])
            if op is None:
                return google_error(404, "NOT_FOUND", f"Not found: operation {rest[1]}.")
            op.polls_left -= 1
            if op.polls_left <= 0 and op.on_done is not None:
                op.on_done()
                op.on_done = None
            return Response(200, op.body(location))
        if rest[0] != "clusters" or len(rest) < 2:
            return google_error(404, "NOT_FOUND", f"Not found: {request.path}.")
        cluster = rest[1]
        cluster_name = f"{location}/clusters/{cluster}"
        if cluster not in self.clusters:
            return google_error(404, "NOT_FOUND", f"Not found: {cluster_name}.")
        if self.forbidden and request.method != "GET":
            return google_error(
                403,
                "PERMISSION_DENIED",
                f'Required "{self.forbidden}" permission(s) for "{cluster_name}".',
            )
        if len(rest) == 2 and request.method == "GET":
            return Response(200, {"name": cluster, "location": self.location, "status": 2})
        if len(rest) == 3 and rest[2] == "nodePools" and request.method == "POST":
            return self._create(request, location, cluster_name)
        if len(rest) == 4 and rest[2] == "nodePools":
            pool_id, _, verb = rest[3].partition(":")
            pool = self.pools.get(pool_id)
            pool_name = f"{cluster_name}/nodePools/{pool_id}"
            if pool is None:
                return google_error(404, "NOT_FOUND", f"Not found: {pool_name}.")
            if request.method == "GET" and not verb:
                return Response(200, pool)
            if request.method == "DELETE" and not verb:
                pool["status"] = POOL_STOPPING
                return self._op(
                    location, DELETE_NODE_POOL, pool_name, lambda: self.pools.pop(pool_id, None)
                )
            if request.method == "POST" and verb == "setAutoscaling":
                scaling = request.body.get("autoscaling", {})
                pool["status"] = POOL_RECONCILING

                def set_scaling() -> None:
                    pool["autoscaling"] = scaling
                    pool["status"] = POOL_RUNNING

                return self._op(location, SET_NODE_POOL_AUTOSCALING, pool_name, set_scaling)
            if request.method == "POST" and verb == "setSize":
                size = int(request.body.get("nodeCount", "0"))

                def set_size() -> None:
                    pool["initialNodeCount"] = size
                    pool["status"] = POOL_RUNNING

                return self._op(location, SET_NODE_POOL_SIZE, pool_name, set_size)
        return google_error(404, "NOT_FOUND", f"Not found: {request.path}.")

    def _create(self, request: Request, location: str, cluster_name: str) -> Response:
        if self.create_http_error is not None:
            return self.create_http_error
        body = copy.deepcopy(request.body["nodePool"])
        pool_id = body["name"]
        if pool_id in self.pools:
            return google_error(
                409, "ALREADY_EXISTS", f"Already exists: {cluster_name}/nodePools/{pool_id}."
            )
        pool_name = f"{cluster_name}/nodePools/{pool_id}"
        body.update(
            {
                "status": POOL_PROVISIONING,
                "selfLink": f"https://container.googleapis.com/v1/{pool_name}",
            }
        )
        self.pools[pool_id] = body
        error = self.create_error

        def finish() -> None:
            if error is None:
                body["status"] = POOL_RUNNING
            else:
                self.pools.pop(pool_id, None)

        op = self._op(location, CREATE_NODE_POOL, pool_name, finish)
        if error is not None:
            self.operations[op.body["name"]].error = error
        return op

    def _op(self, location: str, op_type: int, target: str, on_done: Any) -> Response:
        name = f"operation-{next(self._ids)}"
        op = Operation(name, op_type, target, polls_left=2, on_done=on_done)
        self.operations[name] = op
        return Response(200, op.body(location) | {"status": OP_RUNNING})
