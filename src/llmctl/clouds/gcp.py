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
    ApiRequest,
    Capacity,
    Cloud,
    PoolSpec,
    PoolState,
    Progress,
    capacity_hint,
    missing_sdk,
)
from llmctl.errors import ConfigError, LlmctlError

API = "https://container.googleapis.com/v1"
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
STOCKOUT_WORDS = re.compile(
    r"does not have enough resources|ZONE_RESOURCE_POOL_EXHAUSTED|stockout", re.IGNORECASE
)


def container_client(endpoint: str | None = None, credentials: Any = None) -> Any:
    """The one place a GKE client is built: REST transport, an endpoint and credentials override."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import container_v1
    except ImportError:
        raise missing_sdk("google-cloud-container", CloudName.GCP) from None
    if credentials is None:
        try:
            credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
        except DefaultCredentialsError as exc:
            raise LlmctlError(
                f"no Google Cloud credentials: {exc}", hint=CREDENTIALS_HINT
            ) from None
    options = {"api_endpoint": endpoint} if endpoint else None
    return container_v1.ClusterManagerClient(
        credentials=credentials, transport="rest", client_options=options
    )


def node_pool_body(spec: PoolSpec) -> dict[str, Any]:
    """The NodePool resource in GKE's REST JSON (int64 as strings, enums by name)."""
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
    }
    if spec.capacity is Capacity.SPOT:
        config["spot"] = True
    elif spec.capacity is Capacity.PREEMPTIBLE:
        config["preemptible"] = True
    return {
        "name": spec.name,
        "initialNodeCount": spec.min_nodes,
        "config": config,
        # Total counts (not per zone), so --max-nodes means the same on regional clusters; ANY
        # lets the autoscaler take a zone that has spot capacity.
        "autoscaling": _autoscaling(spec.min_nodes, spec.max_nodes),
        "management": {"autoRepair": True, "autoUpgrade": True},
    }


def _autoscaling(min_nodes: int, max_nodes: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "totalMinNodeCount": min_nodes,
        "totalMaxNodeCount": max_nodes,
        "locationPolicy": "ANY",
    }


class GcpCloud(Cloud):
    name = CloudName.GCP
    busy_statuses: ClassVar[frozenset[str]] = frozenset({"PROVISIONING", "RECONCILING"})
    deleting_statuses: ClassVar[frozenset[str]] = frozenset({"STOPPING"})
    failed_statuses: ClassVar[frozenset[str]] = frozenset({"ERROR"})

    def __init__(
        self,
        endpoint: str | None = None,
        credentials: Any = None,
        poll_delay: float = 5.0,
        timeout_s: float = 1800.0,
    ) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
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

    def kubeconfig_command(self, spec: PoolSpec) -> str:
        return (
            f"gcloud container clusters get-credentials {spec.cluster} --location "
            f"{spec.location} --project {spec.project}"
        )

    # ---- adapter ------------------------------------------------------------------------------

    def _gke(self) -> Any:
        if self._client is None:
            self._client = container_client(self.endpoint, self.credentials)
        return self._client

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

    def create_pool(self, spec: PoolSpec, progress: Progress) -> None:
        from google.cloud import container_v1

        pool = container_v1.NodePool.from_json(json.dumps(node_pool_body(spec)))
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().create_node_pool(parent=self._parent(spec), node_pool=pool)
        self._wait(spec, op, progress)

    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        from google.cloud import container_v1

        scaling = container_v1.NodePoolAutoscaling.from_json(
            json.dumps(_autoscaling(spec.min_nodes, spec.max_nodes))
        )
        with _gcp_errors(spec, "container.clusters.update"):
            op = self._gke().set_node_pool_autoscaling(
                request={"name": self._pool(spec), "autoscaling": scaling}
            )
        self._wait(spec, op, progress)

    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None:
        from google.cloud import container_v1

        # GKE autoscaling needs a maximum of at least 1 (see UNSUPPORTED): turn it off, resize to 0.
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
        from google.cloud import container_v1

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


def _operation_error(spec: PoolSpec, message: str) -> LlmctlError:
    if QUOTA_WORDS.search(message):
        return LlmctlError(
            f"GPU quota exceeded: {message}",
            hint=capacity_hint(spec.cloud)
            + "; or request more NVIDIA_T4_GPUS quota in the Cloud console",
        )
    if STOCKOUT_WORDS.search(message):
        return LlmctlError(
            f"no capacity for {spec.instance_type} with {spec.accelerator}: {message}",
            hint=capacity_hint(spec.cloud),
        )
    return LlmctlError(f"GKE operation failed: {message}")


def _state(pool: Any) -> PoolState:
    config = pool.config
    scaling = pool.autoscaling
    if scaling.total_max_node_count or scaling.total_min_node_count:
        low, high = scaling.total_min_node_count, scaling.total_max_node_count
    elif scaling.enabled:
        low, high = scaling.min_node_count, scaling.max_node_count
    else:
        low = high = 0
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
    )


@contextmanager
def _gcp_errors(spec: PoolSpec, permission: str) -> Iterator[None]:
    from google.api_core.exceptions import GoogleAPICallError, NotFound
    from google.auth.exceptions import RefreshError

    try:
        yield
    except NotFound:
        raise
    except RefreshError as exc:
        raise LlmctlError(
            f"Google Cloud credentials were refused: {exc}", hint=CREDENTIALS_HINT
        ) from None
    except GoogleAPICallError as exc:
        message = str(exc.message)
        if exc.code == 401:
            raise LlmctlError(
                f"Google Cloud credentials were refused: {message}", hint=CREDENTIALS_HINT
            ) from None
        if QUOTA_WORDS.search(message) or STOCKOUT_WORDS.search(message) or exc.code == 429:
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
