"""A GKE REST API stand-in (container.googleapis.com/v1) for the calls llmctl makes, plus the one
Compute Engine call it needs (acceleratorTypes.get).

It is as strict as GKE on every point llmctl depends on; each behaviour names its source:

- Answers as GKE does for `$alt=json;enum-encoding=int` requests: enums as integers, mutations
  return GKE's own `Operation` (not google.longrunning), which `get_operation` shows RUNNING once,
  then DONE; errors are Google's JSON error bodies (`{"error": {"code", "message", "status"}}`).
- Request bodies go through google-cloud-container's own protobuf messages (`NodePool`,
  `NodePoolAutoscaling`, `UpdateNodePoolRequest` `from_json`): an unknown field is a 400
  INVALID_ARGUMENT, as the API's JSON parser rejects it.
- A regional cluster has several zones, and not every zone offers every GPU. A pool takes the
  cluster's zones unless it names `locations` ("If this value is unspecified during node pool
  creation, the Cluster.Locations value will be used", NodePool.locations in
  cluster_service.py); one zone without the accelerator fails the create with 400
  'Accelerator type "nvidia-tesla-t4" does not exist in zone us-west1-c.'
  (GoogleCloudPlatform/kubernetes-engine-samples#1738).
- Node counts are per zone: `initialNodeCount` and `setSize`'s `nodeCount` start that many nodes
  in each of the pool's zones ("In regional or multi-zonal clusters, this is the number of nodes
  per zone", the API reference as generated into pulumi-gcp's NodePool docs); `node_count` says
  how many GPU nodes that makes.
- `totalMin/MaxNodeCount` and `min/maxNodeCount` are "mutually exclusive" (the SDK docstring of
  NodePoolAutoscaling): both set is a 400.
- Two taints with the same key and effect are a 400 "Found more than one taint with key ... and
  effect NO_SCHEDULE." (hashicorp/terraform-provider-google#7928).
- GKE taints GPU nodes `nvidia.com/gpu=present:NoSchedule` itself when the cluster has non-GPU
  pools (GKE GPU docs; GoogleCloudPlatform/cluster-toolkit#3200): `node_taints` shows what a
  node of the pool carries, GKE's taint and the pool's own, merged by key and effect.
- `setAutoscaling` with `enabled: false` keeps the old totals beside `enabled: false` here: what
  GKE does is not documented (review item 14), so the stand-in takes the case llmctl must read
  right.
- UpdateNodePool requires `nodeVersion` and `imageType` ("Required" in the SDK docstring) and
  replaces the pool's whole label set and taint list with the ones given.
- Compute `GET /compute/v1/projects/P/zones/Z/acceleratorTypes/T`: 200 with the type where the
  zone offers it, else 404 (Compute Engine REST reference, acceleratorTypes.get).
- A pool's `locations` may be any zone of the cluster's region, not only the cluster's own node
  locations: "Nodes must be in the region of their regional cluster or in the same region as
  their cluster's zone for zonal clusters" (NodePool node_locations, the API reference as
  generated into pulumi-gcp's docs); a zone of another region is a 400.
- Quotas: `GET /compute/v1/projects/P/regions/R` and `GET /compute/v1/projects/P` answer the
  Region and Project resources with `quotas: [{metric, limit, usage}]` (Compute Engine REST
  reference, regions.get / projects.get; metric names from the Quota.metric enum, e.g.
  PREEMPTIBLE_NVIDIA_T4_GPUS per region, GPUS_ALL_REGIONS per project; limits are doubles).
- `clusters.get` returns the cluster's `nodePools` (Cluster.node_pools), each with its
  `config.serviceAccount` and `oauthScopes`; a pool created without `serviceAccount` gets
  "default", the project's Compute Engine default account ("if no Service Account is specified,
  the "default" service account is used", NodeConfig.service_account). `GET .../nodePools` lists
  them (ListNodePoolsResponse.node_pools).
- Local SSD for ephemeral storage (`config.ephemeralStorageLocalSsdConfig.localSsdCount`, issue
  30): a machine family takes only certain counts ("Choose a valid number of Local SSD disks" in
  the Compute Engine docs: N1 1 to 8, 16 or 24; E2 none, "E2 ... machine types don't support
  Local SSD"); another count is a 400 (the message is the stand-in's own wording, GKE's exact
  text was not found). It is set at creation only: UpdateNodePoolRequest has no field for it,
  so the SDK's message already refuses one there. `local_ssd_gb` says how much a node gets.
- UpdateNodePool's `resourceLabels` replaces the pool's resource labels whole, like `labels`
  (UpdateNodePoolRequest.resource_labels: "The resource labels for the node pool to use to
  annotate any related Google Compute Engine resources").
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_fake import PoolApi, Request, Response

# Enum numbers from the v1 API reference.
OP_RUNNING, OP_DONE = 2, 3
POOL_PROVISIONING, POOL_RUNNING, POOL_RECONCILING, POOL_STOPPING = 1, 2, 4, 5
CREATE_NODE_POOL, DELETE_NODE_POOL, SET_NODE_POOL_SIZE, SET_NODE_POOL_AUTOSCALING = 7, 8, 14, 13
UPGRADE_NODES = 4  # UpdateNodePool's operation type
NO_SCHEDULE = 1
GKE_GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": NO_SCHEDULE}
CLUSTER_VERSION = "1.33.5-gke.1000000"
# us-central1 offers T4 in a, b, c and f; us-west1 in a and b only (illustrative, in the shape of
# `gcloud compute accelerator-types list --filter=name=nvidia-tesla-t4`). ZONES: a region's zones.
ZONES = {
    "us-central1": ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"],
    "us-west1": ["us-west1-a", "us-west1-b", "us-west1-c"],
}
T4_ZONES = {"us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"} | {
    "us-west1-a",
    "us-west1-b",
}


# The cluster's first pool, as clusters.get returns it (a least-privilege node account, as Google
# recommends for GKE nodes, with the scope that defers to IAM).
NODE_SERVICE_ACCOUNT = "gke-nodes@proj.iam.gserviceaccount.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# Quotas of a project that has asked for GPUs (tests set a new project's zeros themselves).
REGION_QUOTAS = {
    "CPUS": (24.0, 4.0),
    "NVIDIA_T4_GPUS": (4.0, 0.0),
    "PREEMPTIBLE_NVIDIA_T4_GPUS": (8.0, 0.0),
}
PROJECT_QUOTAS = {"GPUS_ALL_REGIONS": (8.0, 0.0), "CPUS_ALL_REGIONS": (32.0, 4.0)}
# Local SSD counts each machine family takes (Compute Engine, "Choose a valid number of Local
# SSD disks"); a family absent here takes none.
LOCAL_SSD_COUNTS = {"n1": frozenset({*range(1, 9), 16, 24})}
LOCAL_SSD_DISK_GB = 375


def google_error(code: int, status: str, message: str) -> Response:
    return Response(code, {"error": {"code": code, "message": message, "status": status}})


def invalid(message: str) -> Response:
    return google_error(400, "INVALID_ARGUMENT", message)


def parse(message_type: str, body: Any) -> str | None:
    """Why google-cloud-container's own message would not parse this JSON, or None."""
    from google.cloud import container_v1
    from google.protobuf.json_format import ParseError

    try:
        getattr(container_v1, message_type).from_json(json.dumps(body))
    except (ParseError, TypeError, ValueError) as exc:
        return f"Invalid JSON payload received. {str(exc).splitlines()[0]}"
    return None


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
class FakeGke(PoolApi):
    CLUSTER = "llm-gcp"
    project: str = "proj"
    location: str = "us-central1"
    compute_forbidden: bool = False
    create_error: dict[str, Any] | None = None  # an Operation error for create
    create_http_error: Response | None = None
    # Whether the cluster has pools without GPUs (then GKE adds its own GPU taint).
    has_cpu_pools: bool = True
    # The cluster's own node locations where narrower than its region's zones.
    node_locations: list[str] | None = None
    # metric -> (limit, usage), per region and for the project.
    region_quotas: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(REGION_QUOTAS)
    )
    project_quotas: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(PROJECT_QUOTAS)
    )
    # The pools the cluster had before llmctl came (name -> NodePool JSON).
    system_pools: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "default-pool": {
                "name": "default-pool",
                "config": {
                    "machineType": "e2-standard-2",
                    "serviceAccount": NODE_SERVICE_ACCOUNT,
                    "oauthScopes": [CLOUD_PLATFORM],
                },
                "status": POOL_RUNNING,
            }
        }
    )

    @property
    def prefix(self) -> str:
        return f"/v1/projects/{self.project}/locations/{self.location}"

    @property
    def region(self) -> str:
        return self.location if self.location in ZONES else self.location.rsplit("-", 1)[0]

    @property
    def cluster_zones(self) -> list[str]:
        return self.node_locations or ZONES.get(self.location, [self.location])

    # ---- what tests read ----------------------------------------------------------------------

    def node_count(self, pool_id: str) -> int:
        """GPU nodes the pool runs: its per-zone count in each of its zones."""
        pool = self.pools[pool_id]
        return int(pool.get("initialNodeCount", 0)) * len(pool["locations"])

    def local_ssd_gb(self, pool_id: str) -> int:
        """The Local SSD a node of the pool gives its ephemeral storage (0: the boot disk)."""
        ssd = self.pools[pool_id]["config"].get("ephemeralStorageLocalSsdConfig") or {}
        return int(ssd.get("localSsdCount") or 0) * LOCAL_SSD_DISK_GB

    def node_taints(self, pool_id: str) -> list[dict[str, Any]]:
        """The taints a node of the pool carries: the pool's, plus GKE's GPU taint."""
        taints = list(self.pools[pool_id]["config"].get("taints", []))
        if self.has_cpu_pools and self.pools[pool_id]["config"].get("accelerators"):
            if not any(_same_taint(t, GKE_GPU_TAINT) for t in taints):
                taints.append(GKE_GPU_TAINT)
        return taints

    # ---- the REST API -------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if request.path.startswith("/compute/v1/"):
            parts = request.path.strip("/").split("/")
            if len(parts) in (4, 6) and parts[2] == "projects":
                return self._quotas(parts)
            return self._accelerator_type(request)
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
        all_pools = [*self.system_pools.values(), *self.pools.values()]
        if len(rest) == 2 and request.method == "GET":
            return Response(
                200,
                {
                    "name": cluster,
                    "location": self.location,
                    "locations": self.cluster_zones,
                    "currentMasterVersion": CLUSTER_VERSION,
                    "status": 2,
                    "nodePools": copy.deepcopy(all_pools),
                },
            )
        if len(rest) == 3 and rest[2] == "nodePools" and request.method == "GET":
            return Response(200, {"nodePools": copy.deepcopy(all_pools)})
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
                return self._set_autoscaling(request, location, pool, pool_name)
            if request.method == "POST" and verb == "setSize":
                size = int(request.body.get("nodeCount", "0"))

                def set_size() -> None:
                    pool["initialNodeCount"] = size  # per zone, like initialNodeCount
                    pool["status"] = POOL_RUNNING

                return self._op(location, SET_NODE_POOL_SIZE, pool_name, set_size)
            if request.method == "PUT" and not verb:
                return self._update(request, location, pool, pool_name)
        return google_error(404, "NOT_FOUND", f"Not found: {request.path}.")

    def _quotas(self, parts: list[str]) -> Response:
        # compute/v1/projects/P or compute/v1/projects/P/regions/R
        project = parts[3]
        if project != self.project:
            return google_error(
                404, "NOT_FOUND", f"The resource 'projects/{project}' was not found"
            )
        if self.compute_forbidden:
            what = "compute.projects.get" if len(parts) == 4 else "compute.regions.get"
            return google_error(
                403, "PERMISSION_DENIED", f"Required '{what}' permission for 'projects/{project}'"
            )
        quotas = self.project_quotas
        body: dict[str, Any] = {"kind": "compute#project", "name": project}
        if len(parts) == 6:
            if parts[4] != "regions" or parts[5] not in ZONES:
                return google_error(
                    404,
                    "NOT_FOUND",
                    f"The resource 'projects/{project}/{parts[4]}/{parts[5]}' was not found",
                )
            quotas = self.region_quotas
            body = {"kind": "compute#region", "name": parts[5], "status": "UP"}
        body["quotas"] = [
            {"metric": metric, "limit": limit, "usage": usage}
            for metric, (limit, usage) in quotas.items()
        ]
        return Response(200, body)

    def _accelerator_type(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        # compute/v1/projects/P/zones/Z/acceleratorTypes/T
        if len(parts) != 8 or parts[4] != "zones" or parts[6] != "acceleratorTypes":
            return google_error(404, "NOT_FOUND", f"Not found: {request.path}.")
        if self.compute_forbidden:
            return google_error(
                403,
                "PERMISSION_DENIED",
                "Required 'compute.acceleratorTypes.get' permission for "
                f"'projects/{parts[3]}/zones/{parts[5]}/acceleratorTypes/{parts[7]}'",
            )
        zone, name = parts[5], parts[7]
        if name != "nvidia-tesla-t4" or zone not in T4_ZONES:
            return google_error(
                404,
                "NOT_FOUND",
                f"The resource 'projects/{parts[3]}/zones/{zone}/acceleratorTypes/{name}' was "
                "not found",
            )
        return Response(
            200,
            {
                "kind": "compute#acceleratorType",
                "name": name,
                "zone": f"https://www.googleapis.com/compute/v1/projects/{parts[3]}/zones/{zone}",
                "maximumCardsPerInstance": 4,
            },
        )

    def _create(self, request: Request, location: str, cluster_name: str) -> Response:
        if self.create_http_error is not None:
            return self.create_http_error
        problem = parse("NodePool", request.body.get("nodePool"))
        if problem:
            return invalid(problem)
        body = copy.deepcopy(request.body["nodePool"])
        pool_id = body["name"]
        if pool_id in self.pools:
            return google_error(
                409, "ALREADY_EXISTS", f"Already exists: {cluster_name}/nodePools/{pool_id}."
            )
        problem = self._refusal(body)
        if problem:
            return invalid(problem)
        pool_name = f"{cluster_name}/nodePools/{pool_id}"
        body.setdefault("locations", self.cluster_zones)
        body.setdefault("initialNodeCount", 0)
        body["config"].setdefault("imageType", "COS_CONTAINERD")
        body["config"].setdefault("serviceAccount", "default")
        body.update(
            {
                "status": POOL_PROVISIONING,
                "version": CLUSTER_VERSION,
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

    def _refusal(self, pool: dict[str, Any]) -> str | None:
        zones = pool.get("locations") or self.cluster_zones
        stray = [z for z in zones if z not in ZONES.get(self.region, [])]
        if stray:
            return f"Node pool locations {stray} must be in the cluster's region {self.region}."
        for accelerator in pool.get("config", {}).get("accelerators", []):
            kind = accelerator.get("acceleratorType")
            for zone in zones:
                if kind != "nvidia-tesla-t4" or zone not in T4_ZONES:
                    return f'Accelerator type "{kind}" does not exist in zone {zone}.'
        return (
            _local_ssd_refusal(pool.get("config", {}))
            or _scaling_refusal(pool.get("autoscaling", {}))
            or _taint_refusal(pool.get("config", {}).get("taints", []))
        )

    def _set_autoscaling(
        self, request: Request, location: str, pool: dict[str, Any], pool_name: str
    ) -> Response:
        scaling = request.body.get("autoscaling", {})
        problem = parse("NodePoolAutoscaling", scaling) or _scaling_refusal(scaling)
        if problem:
            return invalid(problem)
        pool["status"] = POOL_RECONCILING

        def set_scaling() -> None:
            if scaling.get("enabled"):
                pool["autoscaling"] = scaling
            else:
                kept = {
                    k: v for k, v in pool.get("autoscaling", {}).items() if k.startswith("total")
                }
                pool["autoscaling"] = {**kept, **scaling}
            pool["status"] = POOL_RUNNING

        return self._op(location, SET_NODE_POOL_AUTOSCALING, pool_name, set_scaling)

    def _update(
        self, request: Request, location: str, pool: dict[str, Any], pool_name: str
    ) -> Response:
        problem = parse("UpdateNodePoolRequest", request.body)
        if problem:
            return invalid(problem)
        body = request.body
        if not body.get("nodeVersion") or not body.get("imageType"):
            return invalid("nodeVersion and imageType are required.")
        taints = body.get("taints", {}).get("taints")
        if taints is not None and (problem := _taint_refusal(taints)):
            return invalid(problem)
        pool["status"] = POOL_RECONCILING

        def update() -> None:
            if "labels" in body:
                pool["config"]["labels"] = dict(body["labels"].get("labels", {}))
            if taints is not None:
                pool["config"]["taints"] = list(taints)
            if "resourceLabels" in body:
                pool["config"]["resourceLabels"] = dict(body["resourceLabels"].get("labels", {}))
            pool["status"] = POOL_RUNNING

        return self._op(location, UPGRADE_NODES, pool_name, update)

    def _op(self, location: str, op_type: int, target: str, on_done: Any) -> Response:
        name = f"operation-{next(self._ids)}"
        op = Operation(name, op_type, target, polls_left=2, on_done=on_done)
        self.operations[name] = op
        return Response(200, op.body(location) | {"status": OP_RUNNING})


def _same_taint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["key"] == b["key"] and _effect(a) == _effect(b))


def _effect(taint: dict[str, Any]) -> int:
    names = {"NO_SCHEDULE": 1, "PREFER_NO_SCHEDULE": 2, "NO_EXECUTE": 3}
    effect = taint.get("effect", 0)
    return names.get(effect, 0) if isinstance(effect, str) else int(effect)


def _taint_refusal(taints: list[dict[str, Any]]) -> str | None:
    for i, taint in enumerate(taints):
        if any(_same_taint(taint, other) for other in taints[:i]):
            effect = {1: "NO_SCHEDULE", 2: "PREFER_NO_SCHEDULE", 3: "NO_EXECUTE"}.get(
                _effect(taint), "EFFECT_UNSPECIFIED"
            )
            return f"Found more than one taint with key {taint['key']} and effect {effect}."
    return None


def _scaling_refusal(scaling: dict[str, Any]) -> str | None:
    totals = {"totalMinNodeCount", "totalMaxNodeCount"} & set(scaling)
    per_zone = {"minNodeCount", "maxNodeCount"} & set(scaling)
    if totals and per_zone:
        return "Total node counts are mutually exclusive with per-zone node counts."
    if scaling.get("enabled") and int(scaling.get("totalMaxNodeCount", 0)) < 1 and not per_zone:
        return "Max node count must be at least 1 when autoscaling is enabled."
    return None


def _local_ssd_refusal(config: dict[str, Any]) -> str | None:
    count = int((config.get("ephemeralStorageLocalSsdConfig") or {}).get("localSsdCount") or 0)
    if not count:
        return None
    machine = str(config.get("machineType", ""))
    allowed = LOCAL_SSD_COUNTS.get(machine.split("-")[0])
    if allowed is None:
        return f"Machine type {machine} does not support Local SSD."
    if count not in allowed:
        return (
            f"Invalid number of Local SSDs {count} for machine type {machine}: allowed "
            f"{', '.join(str(n) for n in sorted(allowed))}."
        )
    return None
