"""GCP: a GKE node pool of spot N1 VMs with one T4 each, through google-cloud-container (REST)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar

from llmctl import catalog
from llmctl.catalog import CloudName, Taint
from llmctl.clouds.base import (
    NO_DRIVER,
    OWNER_KEY,
    OWNER_VALUE,
    ApiRequest,
    Capacity,
    Cloud,
    Feature,
    PoolSpec,
    PoolState,
    Progress,
    capacity_hint,
    missing_sdk,
    require_names,
)
from llmctl.clouds.quota import Quota, QuotaReport
from llmctl.errors import ConfigError, LlmctlError

API = "https://container.googleapis.com/v1"
COMPUTE_API = "https://compute.googleapis.com/compute/v1"
# Shown by --dry-run where the zones are read from the cluster and the compute API at run time.
FROM_CLUSTER_ZONES = "<the cluster's zones that offer {accelerator}, read at run time>"
FROM_CLUSTER_POOLS = "<the node service account of the cluster's other pools, read at run time>"
# Project IDs (optionally domain-scoped; GCP wants 6 to 30 characters, llmctl checks only the
# characters), GKE cluster names, regions/zones and zones.
PROJECT_ID = re.compile(r"([a-z0-9.-]+:)?[a-z][-a-z0-9]{0,28}[a-z0-9]")
GKE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
GCP_LOCATION = re.compile(r"[a-z]+-[a-z]+[0-9]+(-[a-z])?")
GCP_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
EFFECT_TO_GKE = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}
EFFECT_FROM_GKE = {v: k for k, v in EFFECT_TO_GKE.items()}
CREDENTIALS_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service account key file"
)
PERMISSION = re.compile(r"[\"']?(container\.[A-Za-z]+\.[A-Za-z]+|iam\.[A-Za-z.]+)[\"']?")
QUOTA_WORDS = re.compile(r"quota", re.IGNORECASE)
INCOMPATIBLE_WORDS = re.compile(r"incompatible operation|operation .* is currently", re.IGNORECASE)
RETRY_HINT = (
    "another operation on the cluster is running; wait until it finishes (`gcloud container "
    "operations list`) and run the same command again"
)
STOCKOUT_WORDS = re.compile(
    r"does not have enough resources|ZONE_RESOURCE_POOL_EXHAUSTED|stockout", re.IGNORECASE
)
# An API rate limit, not a resource quota: "Quota exceeded for quota metric 'Read requests' and
# limit 'Read requests per minute' of service 'container.googleapis.com'" with the ErrorInfo
# reason RATE_LIMIT_EXCEEDED (google.rpc.ErrorInfo; review N6).
RATE_LIMIT_WORDS = re.compile(r"RATE_LIMIT_EXCEEDED|quota metric|per minute", re.IGNORECASE)
RATE_LIMIT_HINT = (
    "the Google Cloud API is rate-limiting this project; wait a minute and run the same command "
    "again"
)
# The "METHOD url: " that google-api-core puts before a REST error's message.
REST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")
QUOTAS_PAGE = "https://console.cloud.google.com/iam-admin/quotas?project={project}"
# The GPU pool's local disk (issue 30): Local SSD backing the node's ephemeral storage
# (NodeConfig.ephemeralStorageLocalSsdConfig.localSsdCount, "Number of local SSDs to use to back
# ephemeral storage. Uses NVMe interfaces. Each local SSD is 375 GB in size": the
# EphemeralStorageLocalSsdConfig reference; GKE's "Provision and use Local SSD-backed ephemeral
# storage", gcloud --ephemeral-storage-local-ssd). The emptyDirs, the container images and the
# pods' logs then live on it. N1 machine types, the ones GKE attaches T4s to, take 1 to 8, 16 or
# 24 Local SSDs (Compute Engine, "Choose a valid number of Local SSD disks"); one is enough for
# a 4 GB model and costs the least. It is set at creation only: UpdateNodePoolRequest has no
# field for it (google-cloud-container 2.67's UpdateNodePoolRequest), so an existing pool
# without it is reported, not changed.
LOCAL_SSD_COUNT = 1
LOCAL_SSD_GB = 375


def _container_v1() -> Any:
    # importlib, not `from google.cloud import container_v1`: the latter finds a submodule that
    # an earlier import left as an attribute of google.cloud even when sys.modules hides it
    # (review item 13), so a missing SDK would read as missing credentials.
    import importlib

    try:
        return importlib.import_module("google.cloud.container_v1")
    except ImportError:
        raise missing_sdk("google-cloud-container", CloudName.GCP) from None


def default_credentials() -> Any:
    """Application Default Credentials, or a clear error."""
    _container_v1()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except DefaultCredentialsError as exc:
        raise LlmctlError(f"no Google Cloud credentials: {exc}", hint=CREDENTIALS_HINT) from None
    return credentials


def container_client(endpoint: str | None = None, credentials: Any = None) -> Any:
    """The one place a GKE client is built: REST transport, an endpoint and credentials override."""
    container_v1 = _container_v1()
    if credentials is None:
        credentials = default_credentials()
    options = {"api_endpoint": endpoint} if endpoint else None
    return container_v1.ClusterManagerClient(
        credentials=credentials, transport="rest", client_options=options
    )


def node_pool_body(
    spec: PoolSpec,
    zones: list[str] | None = None,
    identity: tuple[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The NodePool resource in GKE's REST JSON (int64 as strings, enums by name).

    `locations` names only zones that offer the GPU: without it the pool takes every zone of a
    regional cluster and GKE answers 400 "Accelerator type ... does not exist in zone ..." where
    one lacks it (GoogleCloudPlatform/kubernetes-engine-samples#1738; NodePool.locations in
    google-cloud-container's cluster_service.py). `initialNodeCount` is per zone ("In regional or
    multi-zonal clusters, this is the number of nodes per zone"), so it is --min-nodes divided by
    the zone count, rounded down: never more GPU nodes (and GPU quota) than asked for at once.

    `identity` is the node service account and its OAuth scopes: GKE gives a pool that names none
    the project's *default* Compute Engine account ("if no Service Account is specified, the
    "default" service account is used", NodeConfig.service_account), not the cluster's node
    account (review N3), so llmctl names the one the cluster's other pools use (or
    --service-account).
    """
    config: dict[str, Any] = {
        "machineType": spec.instance_type,
        "accelerators": [
            {
                "acceleratorCount": str(spec.gpus_per_node),
                "acceleratorType": spec.accelerator,
                "gpuDriverInstallationConfig": {"gpuDriverVersion": catalog.GKE_GPU_DRIVER_VERSION},
            }
        ],
        "labels": dict(spec.labels),
        "taints": [
            {"key": t.key, "value": t.value, "effect": EFFECT_TO_GKE[t.effect]} for t in spec.taints
        ],
        "resourceLabels": {OWNER_KEY: OWNER_VALUE},
    }
    if spec.local_disk:
        config["ephemeralStorageLocalSsdConfig"] = {"localSsdCount": LOCAL_SSD_COUNT}
    if identity is not None:
        config["serviceAccount"], scopes = identity
        if scopes:
            config["oauthScopes"] = scopes
    else:  # --dry-run: read at run time
        config["serviceAccount"] = spec.service_account or FROM_CLUSTER_POOLS
    if spec.capacity is Capacity.SPOT:
        config["spot"] = True
    elif spec.capacity is Capacity.PREEMPTIBLE:
        config["preemptible"] = True
    zones = zones if zones is not None else (list(spec.zones) or None)
    body: dict[str, Any] = {"name": spec.name}
    if zones:
        body["initialNodeCount"] = per_zone_count(spec.min_nodes, len(zones))
        body["locations"] = zones
    else:  # --dry-run: the zones are read at run time
        body["initialNodeCount"] = (
            0 if spec.min_nodes == 0 else "<--min-nodes / zones, rounded down>"
        )
        body["locations"] = [FROM_CLUSTER_ZONES.format(accelerator=spec.accelerator)]
    body.update(
        {
            "config": config,
            # Total counts (not per zone), so --max-nodes means the same on regional clusters; ANY
            # lets the autoscaler take a zone that has spot capacity.
            "autoscaling": _autoscaling(spec.min_nodes, spec.max_nodes),
            "management": {"autoRepair": True, "autoUpgrade": True},
        }
    )
    return body


def per_zone_count(total: int, zones: int) -> int:
    """GKE's per-zone node count for a wanted total: never above the total."""
    return total // max(zones, 1)


def _autoscaling(min_nodes: int, max_nodes: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "totalMinNodeCount": min_nodes,
        "totalMaxNodeCount": max_nodes,
        "locationPolicy": "ANY",
    }


class GcpCloud(Cloud):
    name = CloudName.GCP
    # What this cloud cannot do, with the reason the user is told.
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.SUBNETS: "GKE node pools use the cluster's subnetwork",
        Feature.NODE_ROLE: (
            "GKE nodes use the node service account of the cluster's other pools, or the one "
            "--service-account names"
        ),
        Feature.ZERO_MAX_NODES: (
            "GKE autoscaling needs a maximum of at least 1, so scale-to-zero turns autoscaling "
            "off and resizes the pool to 0"
        ),
    }
    busy_statuses: ClassVar[frozenset[str]] = frozenset({"PROVISIONING", "RECONCILING"})
    deleting_statuses: ClassVar[frozenset[str]] = frozenset({"STOPPING"})
    failed_statuses: ClassVar[frozenset[str]] = frozenset({"ERROR"})

    def __init__(
        self,
        endpoint: str | None = None,
        credentials: Any = None,
        poll_delay: float = 5.0,
        timeout_s: float = 1800.0,
        compute_endpoint: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.compute_endpoint = compute_endpoint or (
            f"{endpoint}/compute/v1" if endpoint else COMPUTE_API
        )
        self.credentials = credentials
        self._session: Any = None
        self.poll_delay = poll_delay
        self.timeout_s = timeout_s
        self._client: Any = None

    def complete_spec(self, spec: PoolSpec, env: Mapping[str, str]) -> PoolSpec:
        project = (
            spec.project or env.get("GOOGLE_CLOUD_PROJECT") or env.get("CLOUDSDK_CORE_PROJECT")
        )
        if not project:
            raise ConfigError(
                "no GCP project given",
                hint="pass --project, set clouds.gcp.project in llmctl.yaml, or set "
                "$GOOGLE_CLOUD_PROJECT",
            )
        # The SDK builds request paths from these and raises ValueError on a `/` (review item 5).
        require_names(
            ("--project", project, PROJECT_ID, "a valid GCP name", "for example my-project-123"),
            ("--cluster", spec.cluster, GKE_NAME, "a valid GCP name", "for example llm-gcp"),
            (
                "--location",
                spec.location,
                GCP_LOCATION,
                "a valid GCP name",
                "for example us-central1 or us-central1-a",
            ),
            *(
                ("--zones", z, GCP_ZONE, "a valid GCP name", "for example us-central1-a")
                for z in spec.zones
            ),
        )
        return replace(spec, project=project)

    def _parent(self, spec: PoolSpec) -> str:
        return f"projects/{spec.project}/locations/{spec.location}/clusters/{spec.cluster}"

    def _pool(self, spec: PoolSpec) -> str:
        return f"{self._parent(spec)}/nodePools/{spec.name}"

    def create_requests(self, spec: PoolSpec) -> list[ApiRequest]:
        return [
            ApiRequest(
                "POST", f"{API}/{self._parent(spec)}/nodePools", {"nodePool": node_pool_body(spec)}
            )
        ]

    def local_disk_text(self, spec: PoolSpec) -> str:
        return (
            f"{LOCAL_SSD_COUNT} Local SSD ({LOCAL_SSD_GB} GB, NVMe) backing the node's "
            "ephemeral storage"
        )

    def kubeconfig_command(self, spec: PoolSpec) -> str:
        return (
            f"gcloud container clusters get-credentials {spec.cluster} --location "
            f"{spec.location} --project {spec.project}"
        )

    # ---- adapter ------------------------------------------------------------------------------

    def _gke(self) -> Any:
        if self._client is None:
            self._client = container_client(self.endpoint, self._credentials())
        return self._client

    def _credentials(self) -> Any:
        if self.credentials is None:
            self.credentials = default_credentials()
        return self.credentials

    def read_pool(self, spec: PoolSpec) -> PoolState | None:
        from google.api_core.exceptions import NotFound

        with _gcp_errors(spec, "container.clusters.get"):
            try:
                pool = self._gke().get_node_pool(name=self._pool(spec))
            except NotFound:
                self._require_cluster(spec)
                return None
        return _state(pool)

    def _require_cluster(self, spec: PoolSpec) -> None:
        from google.api_core.exceptions import NotFound

        with _gcp_errors(spec, "container.clusters.get"):
            try:
                self._gke().get_cluster(name=self._parent(spec))
            except NotFound:
                raise LlmctlError(
                    f"GKE cluster {spec.cluster!r} not found in project {spec.project}, "
                    f"location {spec.location}",
                    hint=f"check --cluster, --location and --project; `gcloud container clusters "
                    f"list --project {spec.project}` lists them",
                ) from None

    def pool_names(self, spec: PoolSpec) -> list[str]:
        with _gcp_errors(spec, "container.clusters.get"):
            answer = self._gke().list_node_pools(parent=self._parent(spec))
        return [p.name for p in answer.node_pools]

    def node_identity(self, spec: PoolSpec) -> tuple[str, list[str]]:
        """The node service account (and OAuth scopes) for the new pool: --service-account, or
        the one every other pool of the cluster uses (clusters.get returns them in nodePools)."""
        with _gcp_errors(spec, "container.clusters.get"):
            cluster = self._gke().get_cluster(name=self._parent(spec))
        others = [p for p in cluster.node_pools if p.name != spec.name]
        if spec.service_account:
            same = [p for p in others if p.config.service_account == spec.service_account]
            scopes = list(same[0].config.oauth_scopes) if same else [CLOUD_PLATFORM_SCOPE]
            return spec.service_account, scopes
        accounts = sorted({p.config.service_account or "default" for p in others})
        if len(accounts) > 1:
            uses = ", ".join(
                f"{p.name}: {p.config.service_account or 'default'}"
                for p in sorted(others, key=lambda p: p.name)
            )
            raise ConfigError(
                f"cluster {spec.cluster!r}'s node pools use different node service accounts "
                f"({uses})",
                hint="name the GPU pool's with --service-account EMAIL",
            )
        if not accounts:
            raise ConfigError(
                f"cluster {spec.cluster!r} has no other node pool to copy the node service "
                "account from",
                hint="name it with --service-account EMAIL (GKE would use the project's default "
                "Compute Engine account)",
            )
        pool = others[0]
        return accounts[0], list(pool.config.oauth_scopes)

    def quota_hint(self, spec: PoolSpec) -> str:
        region = _region(spec.location)
        return (
            f"this is the Compute Engine quota {quota_names(spec)} (GPUs: {spec.max_nodes} x "
            f"{spec.gpus_per_node} {spec.accelerator} needed in {region}); raise it on "
            + QUOTAS_PAGE.format(project=spec.project)
            + f" (filter by the metric, e.g. compute.googleapis.com/{_regional_metric(spec)})"
        )

    def read_quotas(self, spec: PoolSpec) -> QuotaReport:
        """Compute Engine regions.get and projects.get `quotas[]` ({metric, limit, usage}:
        Compute Engine REST reference, Region and Project resources)."""
        region = _region(spec.location)
        try:
            self._credentials()  # a missing SDK or no credentials: a reason, not a traceback
            regional = self._compute_quotas(spec, f"regions/{region}", "compute.regions.get")
            project = self._compute_quotas(spec, "", "compute.projects.get")
        except LlmctlError as exc:
            return QuotaReport(unread=exc.format_message().splitlines()[0])
        needed = spec.gpus_per_node * spec.max_nodes
        page = QUOTAS_PAGE.format(project=spec.project)
        metric = _regional_metric(spec)
        regular = metric.removeprefix("PREEMPTIBLE_")
        # Spot and preemptible VMs draw on the PREEMPTIBLE_ quota where the project has one,
        # else on the regular one (Compute Engine "GPU quota": preemptible quota).
        name = metric if regional.get(metric, (0, 0))[0] > 0 else regular
        limit, usage = regional.get(name, (0.0, 0.0))
        quotas = [
            Quota(
                f"{name} in {region}",
                limit,
                usage,
                needed,
                "GPUs",
                f"{page} (metric compute.googleapis.com/{name.lower()}, region {region})"
                + (
                    f"; or ask for {metric}, which only Spot and preemptible VMs use"
                    if name != metric
                    else ""
                ),
            )
        ]
        limit, usage = project.get("GPUS_ALL_REGIONS", (0.0, 0.0))
        quotas.append(
            Quota(
                "GPUS_ALL_REGIONS",
                limit,
                usage,
                needed,
                "GPUs",
                f"{page} (metric compute.googleapis.com/gpus_all_regions)",
            )
        )
        return QuotaReport(tuple(quotas))

    def _compute_quotas(
        self, spec: PoolSpec, resource: str, permission: str
    ) -> dict[str, tuple[float, float]]:
        url = f"{self.compute_endpoint}/projects/{spec.project}" + (
            f"/{resource}" if resource else ""
        )
        with _gcp_errors(spec, permission):
            answer = self._authorized().get(url, timeout=30)
        if answer.status_code == 403:
            raise LlmctlError(f"permission denied: reading quotas needs {permission}")
        if answer.status_code != 200:
            raise LlmctlError(
                f"the compute API answered {answer.status_code} for {permission}: "
                f"{answer.text[:200]}"
            )
        return {
            str(q["metric"]): (float(q.get("limit", 0)), float(q.get("usage", 0)))
            for q in answer.json().get("quotas", [])
        }

    def _authorized(self) -> Any:
        from google.auth.transport.requests import AuthorizedSession

        if self._session is None:
            self._session = AuthorizedSession(self._credentials())  # type: ignore[no-untyped-call]
        return self._session

    def gpu_zones(self, spec: PoolSpec) -> list[str]:
        """The cluster's zones (or --zones) that offer the GPU, by the compute API's
        acceleratorTypes.get (GKE's own API does not say which zone has which GPU)."""
        if spec.zones:
            return list(spec.zones)
        with _gcp_errors(spec, "container.clusters.get"):
            cluster = self._gke().get_cluster(name=self._parent(spec))
        zones = list(cluster.locations) or [spec.location]
        offered = [z for z in zones if self._offers(spec, z)]
        if not offered:
            raise LlmctlError(
                f"none of cluster {spec.cluster!r}'s zones ({', '.join(zones)}) offers "
                f"{spec.accelerator}",
                hint=f"`gcloud compute accelerator-types list --filter=name={spec.accelerator}` "
                "lists the zones that do; name zones of the cluster's region that offer it with "
                "--zones (GKE accepts any zone of the region)",
            )
        return offered

    def _offers(self, spec: PoolSpec, zone: str) -> bool:
        """Whether a zone has the accelerator type: compute acceleratorTypes.get, 200 or 404."""
        url = (
            f"{self.compute_endpoint}/projects/{spec.project}/zones/{zone}/acceleratorTypes/"
            f"{spec.accelerator}"
        )
        with _gcp_errors(spec, "compute.acceleratorTypes.get"):
            answer = self._authorized().get(url, timeout=30)
        if answer.status_code == 404:
            return False
        if answer.status_code == 403:
            raise LlmctlError(
                f"permission denied: listing GPU types in zone {zone} needs "
                f"compute.acceleratorTypes.get on project {spec.project}",
                hint="grant roles/compute.viewer, or name the zones yourself with --zones",
            )
        if answer.status_code != 200:
            raise LlmctlError(
                f"the compute API answered {answer.status_code} for {spec.accelerator} in {zone}: "
                f"{answer.text[:200]}"
            )
        return True

    def create_pool(self, spec: PoolSpec, progress: Progress) -> None:
        container_v1 = _container_v1()

        progress("finding zones with " + spec.accelerator)
        zones = self.gpu_zones(spec)
        identity = self.node_identity(spec)
        pool = container_v1.NodePool.from_json(json.dumps(node_pool_body(spec, zones, identity)))
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().create_node_pool(parent=self._parent(spec), node_pool=pool)
        self._wait(spec, op, progress)

    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        """setAutoscaling for the counts, UpdateNodePool for labels and taints (GKE replaces each
        set whole, so the pool's other labels and taints are sent back with llmctl's)."""
        container_v1 = _container_v1()
        with _gcp_errors(spec, "container.clusters.get"):
            pool = self._gke().get_node_pool(name=self._pool(spec))
        state = _state(pool)
        if (state.min_nodes, state.max_nodes) != (spec.min_nodes, spec.max_nodes) or not (
            pool.autoscaling.enabled
        ):
            scaling = container_v1.NodePoolAutoscaling.from_json(
                json.dumps(_autoscaling(spec.min_nodes, spec.max_nodes))
            )
            with _gcp_errors(spec, "container.clusters.update"):
                op = self._gke().set_node_pool_autoscaling(
                    request={"name": self._pool(spec), "autoscaling": scaling}
                )
            self._wait(spec, op, progress)
        labels = {**pool.config.labels, **spec.labels}
        have = [
            {"key": t.key, "value": t.value, "effect": t.effect.name} for t in pool.config.taints
        ]
        taints = have + [
            {"key": t.key, "value": t.value, "effect": EFFECT_TO_GKE[t.effect]}
            for t in spec.taints
            if t not in state.taints
        ]
        marked = {**pool.config.resource_labels, OWNER_KEY: OWNER_VALUE}
        if (
            labels == dict(pool.config.labels)
            and len(taints) == len(have)
            and marked == dict(pool.config.resource_labels)
        ):
            return
        request = container_v1.UpdateNodePoolRequest.from_json(
            json.dumps(
                {
                    "name": self._pool(spec),
                    # Both are "Required": the pool's own values, so nothing is upgraded.
                    "nodeVersion": pool.version or "-",
                    "imageType": pool.config.image_type,
                    "labels": {"labels": labels},
                    "taints": {"taints": taints},
                    # Replaced whole, like labels: the pool's own, plus llmctl's mark (adopted).
                    "resourceLabels": {"labels": marked},
                }
            )
        )
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().update_node_pool(request=request)
        self._wait(spec, op, progress)

    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None:
        container_v1 = _container_v1()

        # GKE autoscaling needs a maximum of at least 1 (`unsupported`): turn it off, resize to 0.
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().set_node_pool_autoscaling(
                request={
                    "name": self._pool(spec),
                    "autoscaling": container_v1.NodePoolAutoscaling(enabled=False),
                }
            )
        self._wait(spec, op, progress)
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().set_node_pool_size(request={"name": self._pool(spec), "node_count": 0})
        self._wait(spec, op, progress)

    def delete_pool(self, spec: PoolSpec, progress: Progress) -> None:
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().delete_node_pool(name=self._pool(spec))
        self._wait(spec, op, progress)

    def wait_until_ready(self, spec: PoolSpec, progress: Progress) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            state = self.read_pool(spec)
            if state is None or state.status not in self.busy_statuses:
                return
            progress(state.status)
            if time.monotonic() > deadline:
                raise LlmctlError(f"GKE node pool {spec.name!r} is still {state.status}")
            time.sleep(self.poll_delay)

    def _wait(self, spec: PoolSpec, op: Any, progress: Progress) -> None:
        """Poll GKE's own Operation (not google.longrunning) until DONE; raise its error."""
        container_v1 = _container_v1()

        done = container_v1.Operation.Status.DONE
        name = f"projects/{spec.project}/locations/{spec.location}/operations/{op.name}"
        deadline = time.monotonic() + self.timeout_s
        while op.status != done:
            progress(f"{op.status.name} {op.detail}".strip())
            if time.monotonic() > deadline:
                raise LlmctlError(
                    f"GKE operation {op.name} still {op.status.name} after {self.timeout_s:.0f} s",
                    hint=f"check it with `gcloud container operations describe {op.name}`",
                )
            time.sleep(self.poll_delay)
            with _gcp_errors(spec, "container.operations.get"):
                op = self._gke().get_operation(name=name)
        progress("DONE")
        message = op.error.message if op.error and op.error.message else op.status_message
        if message:
            raise _operation_error(spec, str(message))


def quota_names(spec: PoolSpec) -> str:
    """The Compute Engine quotas a pool of this GPU draws on: Spot and preemptible VMs use the
    PREEMPTIBLE_ quota where the project has one, and every GPU counts against GPUS_ALL_REGIONS
    (0 in new projects)."""
    metric = spec.accelerator.removeprefix("nvidia-tesla-").removeprefix("nvidia-").upper()
    regular = f"NVIDIA_{metric}_GPUS"
    if spec.capacity is Capacity.ON_DEMAND:
        return f"{regular} and GPUS_ALL_REGIONS"
    return (
        f"PREEMPTIBLE_{regular} (or {regular} where the project has no preemptible quota) and "
        "GPUS_ALL_REGIONS"
    )


def _region(location: str) -> str:
    """us-central1 for us-central1 and for its zone us-central1-a."""
    return location if not GCP_ZONE.fullmatch(location) else location.rsplit("-", 1)[0]


def _regional_metric(spec: PoolSpec) -> str:
    metric = spec.accelerator.removeprefix("nvidia-tesla-").removeprefix("nvidia-").upper()
    regular = f"NVIDIA_{metric}_GPUS"
    return regular if spec.capacity is Capacity.ON_DEMAND else f"PREEMPTIBLE_{regular}"


CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _operation_error(spec: PoolSpec, message: str) -> LlmctlError:
    message = REST_PREFIX.sub("", message)
    if RATE_LIMIT_WORDS.search(message):
        return LlmctlError(f"rate-limited: {message}", hint=RATE_LIMIT_HINT)
    if QUOTA_WORDS.search(message):
        what = "GPU quota" if re.search(r"GPU", message) else "quota"
        return LlmctlError(
            f"{what} exceeded: {message}",
            hint=capacity_hint(spec.cloud)
            + f"; or request more {quota_names(spec)} quota in the Cloud console",
        )
    if INCOMPATIBLE_WORDS.search(message):
        return LlmctlError(f"GKE refused: {message}", hint=RETRY_HINT)
    if STOCKOUT_WORDS.search(message):
        return LlmctlError(
            f"no capacity for {spec.instance_type} with {spec.accelerator}: {message}",
            hint=capacity_hint(spec.cloud),
        )
    return LlmctlError(f"GKE operation failed: {message}")


def _state(pool: Any) -> PoolState:
    config = pool.config
    scaling = pool.autoscaling
    # `enabled` first: a pool whose autoscaling was turned off may still carry its old totals.
    if not scaling.enabled:
        low = high = 0
    elif scaling.total_max_node_count or scaling.total_min_node_count:
        low, high = scaling.total_min_node_count, scaling.total_max_node_count
    else:
        low, high = scaling.min_node_count, scaling.max_node_count
    accelerators = list(config.accelerators)
    driver = (
        NO_DRIVER
        if accelerators
        and accelerators[0].gpu_driver_installation_config.gpu_driver_version.name
        == "INSTALLATION_DISABLED"
        else None
    )
    capacity = (
        Capacity.SPOT
        if config.spot
        else Capacity.PREEMPTIBLE
        if config.preemptible
        else Capacity.ON_DEMAND
    )
    return PoolState(
        name=pool.name,
        instance_type=config.machine_type,
        capacity=capacity.value,
        min_nodes=int(low),
        current_nodes=None,
        max_nodes=int(high),
        status=pool.status.name,
        labels=dict(config.labels),
        taints=tuple(
            Taint(t.key, t.value, EFFECT_FROM_GKE.get(t.effect.name, t.effect.name))
            for t in config.taints
        ),
        problems=tuple(c.message for c in pool.conditions if c.message),
        accelerator=accelerators[0].accelerator_type if accelerators else "",
        gpus_per_node=int(accelerators[0].accelerator_count) if accelerators else 0,
        driver=driver,
        owned=config.resource_labels.get(OWNER_KEY) == OWNER_VALUE,
        # Only Local SSD given to ephemeral storage counts: `localSsdCount` alone attaches raw
        # disks the kubelet does not use.
        local_disk=config.ephemeral_storage_local_ssd_config.local_ssd_count > 0,
    )


def _first_line(exc: BaseException) -> str:
    """The host, the exception's class and its reason, without the encoded request URL that
    requests puts in a connection error (review N13)."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r" with url: \S+", "", text.splitlines()[0])
    return f"{type(exc).__name__}: {text}"


@contextmanager
def _gcp_errors(spec: PoolSpec, permission: str) -> Iterator[None]:
    from google.api_core.exceptions import GoogleAPICallError, NotFound, RetryError
    from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import Timeout

    try:
        yield
    except NotFound:
        raise
    except (TransportError, RequestsConnectionError, Timeout, RetryError) as exc:
        raise LlmctlError(
            f"cannot reach the Google Cloud API: {_first_line(exc)}",
            hint="check your network and proxy settings (HTTPS_PROXY); "
            "`gcloud container clusters list` shows whether the API answers from here",
        ) from None
    except RefreshError as exc:
        raise LlmctlError(
            f"Google Cloud credentials were refused: {exc}", hint=CREDENTIALS_HINT
        ) from None
    except GoogleAuthError as exc:
        raise LlmctlError(
            f"Google Cloud credentials failed: {_first_line(exc)}", hint=CREDENTIALS_HINT
        ) from None
    except GoogleAPICallError as exc:
        message = REST_PREFIX.sub("", str(exc.message))
        if exc.code == 401:
            raise LlmctlError(
                f"Google Cloud credentials were refused: {message}", hint=CREDENTIALS_HINT
            ) from None
        if (
            QUOTA_WORDS.search(message)
            or STOCKOUT_WORDS.search(message)
            or INCOMPATIBLE_WORDS.search(message)
            or exc.code == 429
        ):
            raise _operation_error(spec, message) from None
        if exc.code == 403:
            found = PERMISSION.search(message)
            needed = found.group(1) if found else permission
            raise LlmctlError(
                f"permission denied: GKE requires {needed} on project {spec.project}",
                hint="grant roles/container.admin (or a role with that permission) to your "
                f"account; GKE said: {message}",
            ) from None
        raise LlmctlError(f"GKE API error ({exc.code}): {message}") from None
