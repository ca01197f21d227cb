"""Azure: an AKS user agent pool of spot T4 VMs that scales from zero, through
azure-mgmt-containerservice with azure-identity's DefaultAzureCredential."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar

from llmctl.catalog import CloudName, GpuInfo, Taint
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

# Pinned, so --dry-run shows the same api-version the client sends (the SDK's default today).
AKS_API_VERSION = "2026-08-01"
ARM = "https://management.azure.com"
SCOPE = "https://management.azure.com/.default"
CREDENTIALS_HINT = (
    "run `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a "
    "service principal (DefaultAzureCredential also takes a managed or workload identity)"
)
PERMISSION = re.compile(r"perform action '([^']+)'")
RESOURCE_GROUP = re.compile(r"[-\w._()]{0,89}[-\w_()]")
AKS_NAME = re.compile(r"[A-Za-z0-9][-_A-Za-z0-9]{0,62}")
# Node labels AKS sets and owns (Azure/karpenter-provider-azure#1707 lists them; AKS sets
# accelerator=nvidia on GPU nodes and kubernetes.azure.com/scalesetpriority=spot on Spot pools).
RESERVED_LABELS = frozenset({"agentpool", "accelerator", "storageprofile", "storagetier"})
RESERVED_PREFIX = "kubernetes.azure.com/"
QUOTA_CODES = re.compile(r"quota", re.IGNORECASE)
# The compute usages (GET .../Microsoft.Compute/locations/{location}/usages, `name.value`) a pool
# draws on: Spot VMs count against the regional Spot quota "Total Regional Low-priority vCPUs"
# (the portal's "Total Regional Spot vCPUs") and not a VM family's; regular VMs against their
# family's quota and "Total Regional vCPUs" (Azure docs, "Virtual machine vCPU quotas" and "Azure
# Spot Virtual Machines": Spot quota is separate and regional).
SPOT_CORES = ("lowPriorityCores", "Total Regional Spot vCPUs", "lowPriority")
REGIONAL_CORES = ("cores", "Total Regional vCPUs", "dedicated")
VM_FAMILIES = {
    "Standard_NC4as_T4_v3": ("standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs"),
    "Standard_NC8as_T4_v3": ("standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs"),
}
# The GPU pool's local disk (issue 30): an ephemeral OS disk, "stored only on the host machine,
# just like a temporary disk" (AKS, "Storage options": Ephemeral OS disks), so the kubelet's
# ephemeral storage (emptyDirs, images; kubeletDiskType OS, the default) is on the VM's local
# temp disk. NCasT4_v3 sizes have no cache disk, so AKS places it on the temp disk, and refuses
# one larger than the space it counts there: Standard_NC4as_T4_v3 (180 GiB temp disk) is
# refused at 180 GiB with VMCacheSizeTooSmall ("has a cache size of 154619000000 bytes",
# Azure/AKS#2635), so 128 GiB (AKS's own default OS disk size) fits with room. osDiskType and
# osDiskSizeGB "May not be changed after creation" (AgentPool.osDiskType in the SDK), so an
# existing pool without it is reported, not changed. kubeletDiskType Temporary (the temp disk
# for the kubelet beside a managed OS disk) is left alone: its own docs mark it a preview.
OS_DISK_TYPE = "Ephemeral"
OS_DISK_GB = 128
QUOTAS_PORTAL = "https://portal.azure.com/#view/Microsoft_Azure_Capacity/QuotaMenuBlade/~/myQuotas"
THROTTLING_HINT = (
    "Azure Resource Manager is throttling this subscription (azure-core already retried); wait a "
    "minute and run the same command again"
)
# How many of the reasons DefaultAzureCredential gives (one per credential it tried) to keep.
CREDENTIAL_REASONS = 6
CAPACITY_CODES = re.compile(
    r"SkuNotAvailable|AllocationFailed|OverconstrainedAllocationRequest|ZonalAllocationFailed|"
    r"SpotCapacity",
    re.IGNORECASE,
)


class _BearerOverHttp:
    """Adds the bearer token on loopback test endpoints, where azure-core's policy refuses http."""

    def __init__(self, credential: Any) -> None:
        self.credential = credential

    def on_request(self, request: Any) -> None:
        token = self.credential.get_token(SCOPE).token
        request.http_request.headers["Authorization"] = f"Bearer {token}"

    def on_response(self, request: Any, response: Any) -> None:
        return None

    def on_exception(self, request: Any) -> None:
        return None


def aks_client(subscription: str, endpoint: str | None = None, credential: Any = None) -> Any:
    """The one place an AKS client is built: DefaultAzureCredential unless one is given."""
    try:
        from azure.mgmt.containerservice import ContainerServiceClient
    except ImportError:
        raise missing_sdk("azure-mgmt-containerservice, azure-identity", CloudName.AZURE) from None
    credential, kwargs = _arm_options(endpoint, credential)
    return ContainerServiceClient(credential, subscription, api_version=AKS_API_VERSION, **kwargs)


def compute_client(subscription: str, endpoint: str | None = None, credential: Any = None) -> Any:
    """The Compute client, for the usages (quota) list only."""
    try:
        from azure.mgmt.compute import ComputeManagementClient
    except ImportError:
        raise missing_sdk("azure-mgmt-compute, azure-identity", CloudName.AZURE) from None
    credential, kwargs = _arm_options(endpoint, credential)
    return ComputeManagementClient(credential, subscription, **kwargs)


def _arm_options(endpoint: str | None, credential: Any) -> tuple[Any, dict[str, Any]]:
    try:
        from azure.core.pipeline.policies import SansIOHTTPPolicy
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise missing_sdk("azure-identity", CloudName.AZURE) from None
    # azure-identity logs every credential it tried as a multi-line WARNING before raising;
    # llmctl's own error says it once (review item 12).
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    credential = credential or DefaultAzureCredential()
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["base_url"] = endpoint
        if endpoint.startswith("http://"):
            policy = type("BearerOverHttp", (_BearerOverHttp, SansIOHTTPPolicy), {})(credential)
            kwargs["authentication_policy"] = policy
    return credential, kwargs


def agent_pool_body(spec: PoolSpec) -> dict[str, Any]:
    """The AgentPool resource as AKS's REST API takes it."""
    props: dict[str, Any] = {
        "vmSize": spec.instance_type,
        "mode": "User",
        "osType": "Linux",
        "count": spec.min_nodes,
        "enableAutoScaling": True,
        "minCount": spec.min_nodes,
        "maxCount": spec.max_nodes,
        "nodeLabels": dict(spec.labels),
        "nodeTaints": [f"{t.key}={t.value}:{t.effect}" for t in spec.taints],
        "tags": {OWNER_KEY: OWNER_VALUE},
    }
    if spec.local_disk:
        props.update({"osDiskType": OS_DISK_TYPE, "osDiskSizeGB": OS_DISK_GB})
    if spec.capacity is Capacity.SPOT:
        # -1: pay up to the on-demand price, so VMs are evicted for capacity, never for price.
        props.update(
            {"scaleSetPriority": "Spot", "scaleSetEvictionPolicy": "Delete", "spotMaxPrice": -1}
        )
    else:
        props["scaleSetPriority"] = "Regular"
    return {"properties": props}


def _taint_text(taint: Taint) -> str:
    return f"{taint.key}={taint.value}:{taint.effect}"


def updated_agent_pool(spec: PoolSpec, current: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for an existing pool: what AKS returned, with only llmctl's settings changed.

    As terraform-provider-azurerm (`kubernetes_cluster_node_pool_resource.go`: GET, change only what
    `HasChange`, `CreateOrUpdateThenPoll(existing.Model)`) and CAPZ do: every setting AKS or a user
    gave the pool (orchestratorVersion, upgradeSettings, tags, maxPods, the spot label and taint
    AKS adds) goes back unchanged. `count` stays where the autoscaler holds it (Azure/AKS#1627)
    unless it lies outside the new range.
    """
    body = copy.deepcopy(dict(current))
    props = body.setdefault("properties", {})
    count = int(props.get("count") or 0)
    props["enableAutoScaling"] = True
    props["minCount"] = spec.min_nodes
    props["maxCount"] = spec.max_nodes
    props["count"] = min(max(count, spec.min_nodes), spec.max_nodes)
    # AKS replaces the whole label set on a PUT (Azure/AKS#3152): send every label it has.
    props["nodeLabels"] = {**(props.get("nodeLabels") or {}), **spec.labels}
    taints = list(props.get("nodeTaints") or [])
    props["nodeTaints"] = taints + [
        _taint_text(t) for t in spec.taints if _taint_text(t) not in taints
    ]
    # Only reached for llmctl's pools and adopted ones: the mark stays or is added.
    props["tags"] = {**(props.get("tags") or {}), OWNER_KEY: OWNER_VALUE}
    return body


def scaled_to_zero_agent_pool(current: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body that stops the pool: autoscaling off, count 0, nothing else changed."""
    body = copy.deepcopy(dict(current))
    props = body.setdefault("properties", {})
    # AKS needs maxCount >= 1 while autoscaling (see `unsupported`): stop it, set count 0.
    props.update({"enableAutoScaling": False, "count": 0})
    props.pop("minCount", None)
    props.pop("maxCount", None)
    return body


class AzureCloud(Cloud):
    name = CloudName.AZURE
    # What this cloud cannot do, with the reason the user is told.
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.PREEMPTIBLE: "Azure's evictable VMs are Spot VMs (the default)",
        Feature.SUBNETS: "AKS agent pools use the cluster's virtual network",
        Feature.ZONES: "llmctl leaves an AKS pool's availability zones to AKS",
        Feature.NODE_ROLE: "AKS nodes use the cluster's kubelet identity",
        Feature.SERVICE_ACCOUNT: "AKS nodes use the cluster's kubelet identity",
        Feature.ZERO_MAX_NODES: (
            "AKS needs maxCount >= 1 while autoscaling, so scale-to-zero turns autoscaling off "
            "and sets count 0"
        ),
    }
    busy_statuses: ClassVar[frozenset[str]] = frozenset(
        {"Creating", "Updating", "Scaling", "Upgrading", "Starting", "Stopping"}
    )
    deleting_statuses: ClassVar[frozenset[str]] = frozenset({"Deleting"})
    failed_statuses: ClassVar[frozenset[str]] = frozenset({"Failed"})
    # "Canceled" (the last operation was cancelled, e.g. by a newer one) is none of these: the
    # pool exists with its last good settings, and the next GET-modify-PUT reconciles it.

    def __init__(
        self, endpoint: str | None = None, credential: Any = None, poll_delay: float = 15.0
    ) -> None:
        self.endpoint = endpoint
        self.credential = credential
        self.poll_delay = poll_delay
        self._client: Any = None
        self._compute: Any = None

    def pool_name(self, gpu: GpuInfo) -> str:
        # Linux agent pool names: lowercase letters and digits only, at most 12 characters.
        return re.sub(r"[^a-z0-9]", "", f"gpu{gpu.name}")[:12]

    def complete_spec(self, spec: PoolSpec, env: Mapping[str, str]) -> PoolSpec:
        subscription = spec.subscription or env.get("AZURE_SUBSCRIPTION_ID")
        if not subscription:
            raise ConfigError(
                "no Azure subscription given",
                hint="set AZURE_SUBSCRIPTION_ID (`az account show --query id -o tsv` prints it)",
            )
        if not spec.resource_group:
            raise ConfigError(
                "no Azure resource group given",
                hint="pass --resource-group or set clouds.azure.resourceGroup",
            )
        # ARM naming rules (Microsoft.Resources resourceGroups, ContainerService managedClusters).
        require_names(
            (
                "--resource-group",
                spec.resource_group,
                RESOURCE_GROUP,
                "a valid resource group name",
                "letters, digits, _ - . ( ), at most 90, not ending in '.'",
            ),
            (
                "--cluster",
                spec.cluster,
                AKS_NAME,
                "a valid AKS cluster name",
                "letters, digits, - and _, starting with a letter or digit, at most 63",
            ),
        )
        reserved = [k for k in spec.labels if k in RESERVED_LABELS or k.startswith(RESERVED_PREFIX)]
        if reserved:
            raise ConfigError(
                f"AKS reserves the node label {reserved[0]!r} and refuses changes to it",
                hint="use a key of your own (llmctl's is llmctl.dev/accelerator)",
            )
        return replace(spec, subscription=subscription)

    def _path(self, spec: PoolSpec) -> str:
        return (
            f"/subscriptions/{spec.subscription}/resourceGroups/{spec.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{spec.cluster}"
            f"/agentPools/{spec.name}"
        )

    def create_requests(self, spec: PoolSpec) -> list[ApiRequest]:
        return [
            ApiRequest(
                "PUT",
                f"{ARM}{self._path(spec)}?api-version={AKS_API_VERSION}",
                agent_pool_body(spec),
            )
        ]

    def local_disk_text(self, spec: PoolSpec) -> str:
        return f"an ephemeral OS disk ({OS_DISK_GB} GiB on the VM's local temp disk)"

    def kubeconfig_command(self, spec: PoolSpec) -> str:
        return (
            f"az aks get-credentials --resource-group {spec.resource_group} --name {spec.cluster}"
        )

    # ---- adapter ------------------------------------------------------------------------------

    def _aks(self, spec: PoolSpec) -> Any:
        if self._client is None:
            assert spec.subscription is not None  # complete_spec requires it
            self._client = aks_client(spec.subscription, self.endpoint, self.credential)
        return self._client

    def pool_names(self, spec: PoolSpec) -> list[str]:
        with _azure_errors(spec, "Microsoft.ContainerService/managedClusters/agentPools/read"):
            pools = self._aks(spec).agent_pools.list(spec.resource_group, spec.cluster)
            return [str(p.name) for p in pools]

    def _quota_names(self, spec: PoolSpec) -> list[tuple[str, str, str]]:
        """(usage name, display name, az quota resource type) of each quota the pool uses."""
        if spec.capacity is Capacity.SPOT:
            return [SPOT_CORES]
        family = VM_FAMILIES.get(spec.instance_type)
        return ([(*family, "dedicated")] if family else []) + [REGIONAL_CORES]

    def _raise_command(self, spec: PoolSpec, name: str, kind: str, value: float) -> str:
        return (
            f"az quota update --resource-name {name} --scope subscriptions/{spec.subscription}"
            f"/providers/Microsoft.Compute/locations/{spec.location} --limit-object "
            f"value={int(value)} --resource-type {kind} (or the portal's Quotas page, "
            f"{QUOTAS_PORTAL})"
        )

    def quota_hint(self, spec: PoolSpec) -> str:
        needed = spec.vcpus_per_node * spec.max_nodes
        names = " and ".join(f'"{shown}" ({name})' for name, shown, _ in self._quota_names(spec))
        name, _, kind = self._quota_names(spec)[0]
        return (
            f"this is the Azure compute quota {names} in {spec.location} ({needed} vCPUs for "
            f"{spec.max_nodes} x {spec.instance_type}); another VM size of the same family does "
            "not help; raise it: " + self._raise_command(spec, name, kind, needed)
        )

    def read_quotas(self, spec: PoolSpec) -> QuotaReport:
        """Compute's usages list for the pool's location (azure-mgmt-compute `usage.list`):
        {name.value, currentValue, limit} per quota."""
        try:
            if self._compute is None:
                assert spec.subscription is not None  # complete_spec requires it
                self._compute = compute_client(spec.subscription, self.endpoint, self.credential)
            with _azure_errors(spec, "Microsoft.Compute/locations/usages/read"):
                usages = {
                    str(u.name.value): (float(u.limit), float(u.current_value))
                    for u in self._compute.usage.list(spec.location)
                }
        except LlmctlError as exc:
            return QuotaReport(unread=exc.format_message().splitlines()[0])
        needed = spec.vcpus_per_node * spec.max_nodes
        quotas = []
        for name, shown, kind in self._quota_names(spec):
            limit, usage = usages.get(name, (0.0, 0.0))
            raise_how = self._raise_command(spec, name, kind, usage + needed)
            quotas.append(Quota(f"{shown} ({name})", limit, usage, needed, "vCPUs", raise_how))
        return QuotaReport(tuple(quotas))

    def read_pool(self, spec: PoolSpec) -> PoolState | None:
        current = self._get(spec)
        return None if current is None else _state(current)

    def _get(self, spec: PoolSpec) -> dict[str, Any] | None:
        """The pool as AKS's REST JSON (azure-mgmt-containerservice >= 41.8 models), or None."""
        from azure.core.exceptions import ResourceNotFoundError

        with _azure_errors(spec, "Microsoft.ContainerService/managedClusters/agentPools/read"):
            try:
                pool = self._aks(spec).agent_pools.get(spec.resource_group, spec.cluster, spec.name)
            except ResourceNotFoundError:
                self._require_cluster(spec)
                return None
        return dict(pool.as_dict())

    def _require_cluster(self, spec: PoolSpec) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with _azure_errors(spec, "Microsoft.ContainerService/managedClusters/read"):
            try:
                self._aks(spec).managed_clusters.get(spec.resource_group, spec.cluster)
            except ResourceNotFoundError as exc:
                if _code(exc) == "ResourceGroupNotFound":
                    raise
                raise LlmctlError(
                    f"AKS cluster {spec.cluster!r} not found in resource group "
                    f"{spec.resource_group!r}: {_message(exc)}",
                    hint=f"check --cluster and --resource-group; `az aks list --resource-group "
                    f"{spec.resource_group}` lists the clusters there",
                ) from None

    def _put(
        self,
        spec: PoolSpec,
        body: dict[str, Any],
        progress: Progress,
        etag: str | None = None,
    ) -> None:
        from azure.core import MatchConditions
        from azure.mgmt.containerservice.models import AgentPool

        # The typed model drops the read-only fields (provisioningState, eTag...) it was given.
        model = AgentPool(body)
        condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        with _azure_errors(spec, "Microsoft.ContainerService/managedClusters/agentPools/write"):
            poller = self._aks(spec).agent_pools.begin_create_or_update(
                spec.resource_group,
                spec.cluster,
                spec.name,
                model,
                polling_interval=self.poll_delay,
                **condition,
            )
            self._follow(poller, progress)

    def _follow(self, poller: Any, progress: Progress) -> None:
        while not poller.done():
            progress(str(poller.status()))
            poller.wait(self.poll_delay)
        progress(str(poller.status()))
        poller.result()

    def create_pool(self, spec: PoolSpec, progress: Progress) -> None:
        self._put(spec, agent_pool_body(spec), progress)

    def _modify(self, spec: PoolSpec, change: Any, progress: Progress) -> None:
        """GET, change, PUT with If-Match on the eTag read (a concurrent change gets 412)."""
        current = self._get(spec)
        if current is None:
            raise LlmctlError(f"AKS agent pool {spec.name!r} disappeared while llmctl read it")
        etag = current.get("properties", {}).get("eTag")
        self._put(spec, change(current), progress, etag=etag)

    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        self._modify(spec, lambda current: updated_agent_pool(spec, current), progress)

    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None:
        self._modify(spec, scaled_to_zero_agent_pool, progress)

    def delete_pool(self, spec: PoolSpec, progress: Progress) -> None:
        with _azure_errors(spec, "Microsoft.ContainerService/managedClusters/agentPools/delete"):
            poller = self._aks(spec).agent_pools.begin_delete(
                spec.resource_group, spec.cluster, spec.name, polling_interval=self.poll_delay
            )
            self._follow(poller, progress)

    def wait_until_ready(self, spec: PoolSpec, progress: Progress) -> None:
        import time

        for _ in range(240):
            state = self.read_pool(spec)
            if state is None or state.status not in self.busy_statuses:
                return
            progress(state.status)
            time.sleep(self.poll_delay)
        raise LlmctlError(f"AKS agent pool {spec.name!r} is still busy after waiting")


def _state(raw: Mapping[str, Any]) -> PoolState:
    props = raw.get("properties", {})
    autoscaling = bool(props.get("enableAutoScaling"))
    count = int(props.get("count") or 0)
    taints = []
    for text in props.get("nodeTaints") or []:
        key_value, _, effect = text.partition(":")
        key, _, value = key_value.partition("=")
        taints.append(Taint(key, value, effect))
    return PoolState(
        name=str(raw.get("name", "")),
        instance_type=str(props.get("vmSize", "")),
        capacity="spot" if props.get("scaleSetPriority") == "Spot" else "on-demand",
        min_nodes=int(props.get("minCount") or 0) if autoscaling else 0,
        current_nodes=count,
        max_nodes=int(props.get("maxCount") or 0) if autoscaling else 0,
        status=str(props.get("provisioningState", "Unknown")),
        labels=dict(props.get("nodeLabels") or {}),
        taints=tuple(taints),
        managed_device_plugin=(
            ((props.get("gpuProfile") or {}).get("nvidia") or {}).get("managementMode") == "Managed"
        ),
        # gpuProfile.driver: "Install" (the default when unset) or "None" (no driver).
        driver=NO_DRIVER if (props.get("gpuProfile") or {}).get("driver") == "None" else None,
        owned=(props.get("tags") or {}).get(OWNER_KEY) == OWNER_VALUE,
        # Either puts the kubelet's ephemeral storage on the VM's own disk.
        local_disk=props.get("osDiskType") == OS_DISK_TYPE
        or props.get("kubeletDiskType") == "Temporary",
    )


def _code(exc: Any) -> str:
    return str(getattr(getattr(exc, "error", None), "code", "") or "")


def _message(exc: Any) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", None) or exc.message or exc)


@contextmanager
def _azure_errors(spec: PoolSpec, permission: str) -> Iterator[None]:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    try:
        yield
    except ResourceNotFoundError as exc:
        if _code(exc) == "ResourceGroupNotFound":
            raise LlmctlError(
                f"resource group {spec.resource_group!r} not found: {_message(exc)}",
                hint="pass --resource-group with the cluster's resource group",
            ) from None
        raise
    except ClientAuthenticationError as exc:
        if _unreachable(exc):
            raise LlmctlError(
                f"cannot reach the Azure token endpoint: {_first_line(exc)}",
                hint="check your network and proxy settings (HTTPS_PROXY); the credentials "
                "themselves were not refused",
            ) from None
        if exc.status_code in (None, 401):
            raise LlmctlError(
                f"no usable Azure credentials: {_credential_reasons(exc)}", hint=CREDENTIALS_HINT
            ) from None
        raise _http_error(spec, exc, permission) from None
    except HttpResponseError as exc:
        raise _http_error(spec, exc, permission) from None
    except ServiceRequestError as exc:
        raise LlmctlError(f"cannot reach the Azure API: {exc}") from None


def _credential_reasons(exc: Any) -> str:
    """DefaultAzureCredential's summary line and, indented below it, the reason each credential
    it tried gave (`EnvironmentCredential: ... not fully configured`, `AzureCliCredential: Please
    run 'az login'`...), a few at most; its "To mitigate this issue" trailer is left out."""
    lines = [line.rstrip() for line in str(exc.message).splitlines() if line.strip()]
    reasons = [
        line.strip()
        for line in lines[1:]
        if not line.lower().startswith(("attempted credentials", "to mitigate", "visit "))
    ]
    kept = "".join(f"\n    {r}" for r in reasons[:CREDENTIAL_REASONS])
    return lines[0] + kept if lines else type(exc).__name__


def _first_line(exc: Any) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0]


# How DefaultAzureCredential's aggregated message reports a token endpoint it could not reach.
UNREACHABLE_WORDS = re.compile(
    r"Failed to resolve|Name or service not known|Connection refused|Max retries exceeded|"
    r"timed out|Failed to establish a new connection|ServiceRequestError",
    re.IGNORECASE,
)


def _unreachable(exc: BaseException) -> bool:
    """Whether a credential failure is really a network failure (a ServiceRequestError inside)."""
    from azure.core.exceptions import ServiceRequestError

    if UNREACHABLE_WORDS.search(str(getattr(exc, "message", None) or exc)):
        return True
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ServiceRequestError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


RETRY_HINT = (
    "another change to the cluster or pool is in progress (or came in between llmctl's read and "
    "write); wait until it finishes (`llmctl gpu status`) and run the same command again"
)


def _http_error(spec: PoolSpec, exc: Any, permission: str) -> LlmctlError:
    code = _code(exc)
    message = _message(exc)
    if exc.status_code == 429:
        return LlmctlError(
            f"AKS API error ({exc.status_code} {code}): {message}", hint=THROTTLING_HINT
        )
    if QUOTA_CODES.search(code) or QUOTA_CODES.search(message):
        return LlmctlError(
            f"Azure quota exceeded ({code}): {message}", hint=AzureCloud().quota_hint(spec)
        )
    if exc.status_code in (409, 412) or code in ("OperationNotAllowed", "PreconditionFailed"):
        return LlmctlError(f"AKS API error ({exc.status_code} {code}): {message}", hint=RETRY_HINT)
    if exc.status_code == 403 or code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
        found = PERMISSION.search(message)
        needed = found.group(1) if found else permission
        return LlmctlError(
            f"permission denied: Azure requires {needed}",
            hint="assign a role that includes it, e.g. Azure Kubernetes Service Contributor Role "
            f"on the cluster; Azure said: {message}",
        )
    if CAPACITY_CODES.search(code) or CAPACITY_CODES.search(message):
        return LlmctlError(
            f"no capacity for {spec.instance_type} ({code}): {message}",
            hint=capacity_hint(spec.cloud),
        )
    return LlmctlError(f"AKS API error ({exc.status_code} {code}): {message}")
