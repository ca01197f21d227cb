"""Why a GPU pool did not grow: what the node autoscalers report (`llmctl gpu status`).

cluster-autoscaler's events on pending GPU pods and its status ConfigMap, and Karpenter's
NodeClaims, read as `ScaleUpReason`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmctl.kube.client import EVENTS, GPU_SETUP_RIGHTS, PODS, call, get_or_none, kube_errors
from llmctl.kube.kinds import kind_of
from llmctl.kube.preflight import ClusterFacts

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
    with kube_errors("listing pending pods", AUTOSCALER_RIGHTS):
        pods = call(api, "GET", PODS.path(), [("fieldSelector", "status.phase=Pending")])
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
        with kube_errors(f"listing {reason} events", AUTOSCALER_RIGHTS):
            events = call(api, "GET", EVENTS.path(), [("fieldSelector", f"reason={reason}")])
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

    found = []
    for namespace in dict.fromkeys([*namespaces, "kube-system"]):
        path = kind_of("v1", "ConfigMap").path(AUTOSCALER_STATUS_CONFIGMAP, namespace)
        what = f"reading ConfigMap {namespace}/{AUTOSCALER_STATUS_CONFIGMAP}"
        config_map = get_or_none(api, path, what, GPU_SETUP_RIGHTS, absent=(403, 404))
        if config_map is None:
            continue
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
    claims = get_or_none(api, NODECLAIMS_PATH, "listing Karpenter NodeClaims", AUTOSCALER_RIGHTS)
    if claims is None:
        return []
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
