"""An AKS (Azure Resource Manager) REST stand-in for the agent pool calls llmctl makes.

PUT answers 201 with provisioningState Creating (200 Updating for an existing pool) and the
poller's GETs see it Succeeded on the next read; DELETE answers 202 with an Azure-AsyncOperation
URL that reports InProgress, then Succeeded. Errors are ARM's `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_fake import Request, Response

TOKEN = "aks-test-token"
PROVIDER = "Microsoft.ContainerService"


def arm_error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


@dataclass
class FakeAks:
    subscription: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "llm-rg"
    clusters: set[str] = field(default_factory=lambda: {"llm-azure"})
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    forbidden_action: str | None = None
    put_error: Response | None = None
    async_ops: dict[str, list[str]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def route(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if "api-version" not in request.query:
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required.",
            )
        parts = request.path.strip("/").split("/")
        if len(parts) >= 4 and parts[2] == "providers" and parts[4] == "locations":
            return self._operation(parts[-1])
        if parts[:2] != ["subscriptions", self.subscription] or len(parts) < 8:
            return arm_error(
                404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found."
            )
        group, cluster = parts[3], parts[7]
        if group != self.resource_group:
            return arm_error(
                404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found."
            )
        scope = "/" + "/".join(parts)
        if cluster not in self.clusters:
            return arm_error(
                404,
                "ResourceNotFound",
                f"The Resource '{PROVIDER}/managedClusters/{cluster}' under resource "
                f"group '{group}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        if len(parts) == 8:
            return Response(
                200,
                {
                    "id": scope,
                    "name": cluster,
                    "location": "eastus",
                    "properties": {"provisioningState": "Succeeded"},
                },
            )
        name = parts[9]
        action = {"GET": "read", "PUT": "write", "DELETE": "delete"}[request.method]
        wanted = f"{PROVIDER}/managedClusters/agentPools/{action}"
        if self.forbidden_action == wanted:
            return arm_error(
                403,
                "AuthorizationFailed",
                "The client 'dev@example.com' with object id "
                "'11111111-1111-1111-1111-111111111111' does not have authorization "
                f"to perform action '{wanted}' over scope '{scope}' or the scope is "
                "invalid. If access was recently granted, please refresh your "
                "credentials.",
            )
        pool = self.pools.get(name)
        if request.method == "GET":
            if pool is None:
                return arm_error(
                    404,
                    "NotFound",
                    f"Could not find agent pool {name} in managed cluster {cluster}.",
                )
            shown = copy.deepcopy(pool)
            # The next read after a PUT sees the work finished, as AKS reports it later.
            pool["properties"]["provisioningState"] = "Succeeded"
            return Response(200, shown)
        if request.method == "PUT":
            if self.put_error is not None:
                return self.put_error
            created = pool is None
            stored = {
                "id": scope,
                "name": name,
                "type": f"{PROVIDER}/managedClusters/agentPools",
                "properties": copy.deepcopy(request.body["properties"]),
            }
            stored["properties"]["provisioningState"] = "Creating" if created else "Updating"
            stored["properties"]["powerState"] = {"code": "Running"}
            self.pools[name] = stored
            return Response(201 if created else 200, copy.deepcopy(stored))
        if request.method == "DELETE":
            if pool is None:
                return Response(204)
            op = f"op-{next(self._ids)}"
            pool["properties"]["provisioningState"] = "Deleting"
            self.async_ops[op] = ["InProgress", "Succeeded"]
            self._deleting = name
            url = (
                f"http://{request.headers['host']}/subscriptions/{self.subscription}/providers/"
                f"{PROVIDER}/locations/eastus/operations/{op}?api-version={request.query['api-version']}"
            )
            return Response(202, None, {"Azure-AsyncOperation": url})
        return arm_error(405, "MethodNotAllowed", request.method)

    def _operation(self, op: str) -> Response:
        states = self.async_ops.get(op)
        if not states:
            return arm_error(404, "NotFound", f"operation {op}")
        status = states.pop(0) if len(states) > 1 else states[0]
        if status == "Succeeded":
            self.pools.pop(self._deleting, None)
        return Response(200, {"name": op, "status": status, "startTime": "2026-01-01T00:00:00Z"})
