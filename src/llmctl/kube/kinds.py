"""The Kubernetes kinds llmctl applies, and the server-side apply request for one object.

Pure: no client, no call, so `--dry-run` prints exactly what would be sent. The REST path of a
kind comes from this table (group/version, plural, namespaced), not from a pluralisation guess;
tests/test_kube.py checks every row against a real API server's discovery, so a new kind with a
wrong row fails there, not at a user's apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmctl.errors import LlmctlError

FIELD_MANAGER = "llmctl"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Kind:
    """One API resource as discovery describes it (`kubectl api-resources` prints the same)."""

    api_version: str  # "v1" for the core group, else "group/version"
    kind: str
    plural: str
    namespaced: bool

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        """The resource's REST path: its collection, or one object when `name` is given."""
        core = "/" not in self.api_version  # the core group ("v1") lives under /api
        base = ("/api/" if core else "/apis/") + self.api_version
        where = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")


# The kinds llmctl applies or reads (Karpenter's NodeClaim is not here: its group exists only where
# Karpenter runs, so no discovery here can check it; kube/scaleup.py names its path).
KINDS: tuple[Kind, ...] = (
    Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "Node", "nodes", False),
    Kind("v1", "Pod", "pods", True),
    Kind("v1", "Event", "events", True),
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("v1", "ConfigMap", "configmaps", True),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "Service", "services", True),
    Kind("v1", "Endpoints", "endpoints", True),  # the plural a guess gets wrong ("endpointses")
    Kind("apps/v1", "DaemonSet", "daemonsets", True),
    Kind("apps/v1", "Deployment", "deployments", True),
    Kind("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", False),
    Kind("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", False),
    Kind("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
)
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


def kind_of(api_version: str, kind: str) -> Kind:
    """The table's row for this apiVersion and kind; an unknown one is a clear error."""
    found = _BY_KIND.get((api_version, kind))
    if found is None:
        raise LlmctlError(
            f"llmctl does not know the REST path of {kind} ({api_version})",
            hint="add its row (plural and scope, from `kubectl api-resources`) to KINDS in "
            "src/llmctl/kube/kinds.py",
        )
    return found


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


def apply_request(obj: Mapping[str, Any]) -> ApplyRequest:
    """The server-side apply request for one object (pure: no client, no call)."""
    kind = kind_of(str(obj["apiVersion"]), str(obj["kind"]))
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    if kind.namespaced and not namespace:
        raise LlmctlError(f"{kind.kind}/{meta['name']} has no metadata.namespace to apply it in")
    # No `force`: a field another manager owns (someone's own device plugin of the same name) is
    # a 409 conflict to report, not something to take over silently (review item 8).
    return ApplyRequest(kind.path(meta["name"], namespace), (("fieldManager", FIELD_MANAGER),), obj)
