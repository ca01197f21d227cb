"""An AKS (Azure Resource Manager) REST stand-in for the agent pool calls llmctl makes.

It is as strict as AKS on every point llmctl depends on; each behaviour names its source:

- Request bodies go through azure-mgmt-containerservice's own `AgentPool` model: a property name
  that model does not know, or a value of the wrong JSON type for the fields llmctl writes, is a
  400 (the SDK's REST names are the API's: `ManagedClusterAgentPoolProfileProperties`).
- PUT answers 201 (new) / 200 (existing) with provisioningState Creating/Updating and an
  `Azure-AsyncOperation` header whose operation reports InProgress, then Succeeded (or Failed with
  an error, `operation_error`); the pool reads Succeeded once the operation is done. (ARM async
  operations: learn.microsoft.com/azure/azure-resource-manager/management/async-operations; the
  AKS REST reference "Agent Pools - Create Or Update" lists 200/201 with that header.)
- On create AKS fills in defaults the body left out (orchestratorVersion, osSKU, osDiskSizeGB,
  kubeletDiskType, maxPods, upgradeSettings.maxSurge, nodeImageVersion, type, eTag) and, for Spot
  pools, adds the label `kubernetes.azure.com/scalesetpriority: spot` and the taint
  `kubernetes.azure.com/scalesetpriority=spot:NoSchedule`, which it returns in
  nodeLabels/nodeTaints (hashicorp/terraform-provider-azurerm#14024 quoting the AKS docs,
  kubernetes-sigs/cluster-api-provider-azure#3976).
- PUT replaces the pool: what the body leaves out is gone (tags) or back at its default
  (upgradeSettings), and a label update replaces the whole label set, the spot label included
  (Azure/AKS#3152: "the kubernetes.azure.com/scalesetpriority:spot label will be deleted"). The
  spot taint is added back (terraform-provider-azurerm#14024 had to suppress that diff).
- `count` is stored as sent, also while the autoscaler holds the pool at another size: what AKS
  does with it is undocumented (Azure/AKS#1627), so the stand-in takes the worst case.
- Refused with 400: labels AKS reserves (`kubernetes.azure.com/*`, `agentpool`, `accelerator`,
  `storageprofile`, `storagetier`; Azure/karpenter-provider-azure#1707) set to a value AKS did not
  give them; label keys in the kubernetes.io / k8s.io namespaces outside the allowed prefixes
  (the AKS message quoted in Azure/AKS#1937); a count outside [minCount, maxCount] while
  autoscaling, maxCount < 1 or minCount > maxCount (AKS's InvalidParameter answers, mirrored by
  terraform-provider-azurerm's node_count checks); changes to vmSize, osType, scaleSetPriority,
  scaleSetEvictionPolicy ("ScaleSetPriority is immutable", ansible-collections/azure#2186; vmSize
  is changed only through a new pool).
- `If-Match` with a stale eTag is a 412 PreconditionFailed (ARM optimistic concurrency; the SDK
  sends it from `etag=` + `MatchConditions.IfNotModified`).
- DELETE answers 202 with an Azure-AsyncOperation URL. Errors are ARM's `{"error": {"code",
  "message"}}`.
- Spot pools take no max surge: a Spot PUT with a non-null `upgradeSettings.maxSurge` is a 400
  InvalidParameter "Spot pools can't set max surge" (target agentPoolProfile.upgrade.maxSurge;
  quoted in hashicorp/terraform-provider-azurerm#19355 and jenkins-infra/azure#730), and a Spot
  pool's GET shows `"upgradeSettings": {"maxSurge": null}` (Azure/AKS#2030), so the 10% default
  is for Regular pools only.
- Ephemeral OS disks (issue 30): with `osDiskType: Ephemeral` the OS disk must fit the space AKS
  counts on the VM size's cache or temp disk, else 400 VMCacheSizeTooSmall "The virtual machine
  size Standard_NC4as_T4_v3 has a cache size of 154619000000 bytes, but the OS disk requires
  193273528320 bytes. Use a VM size with larger cache or disable ephemeral OS." (Azure/AKS#2635,
  an NC4as_T4_v3 pool at 180 GiB; Azure/AKS#1988 and rancher/rancher#33679 show the same code
  for other sizes). `osDiskType` and `osDiskSizeGB` "May not be changed after creation"
  (AgentPool.osDiskType in the SDK): a change is PropertyChangeNotAllowed like vmSize.
- `GET .../agentPools` lists the cluster's pools as `{"value": [...]}` (Agent Pools - List).
- Compute usages: `GET /subscriptions/S/providers/Microsoft.Compute/locations/L/usages` answers
  `{"value": [{"unit": "Count", "currentValue", "limit", "name": {"value", "localizedValue"}}]}`
  (Compute REST reference, Usage - List; the model azure-mgmt-compute's `usage.list` reads).
  `usages` holds each quota's limit and use (tests set a new subscription's zeros).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_fake import PoolApi, Request, Response

TOKEN = "aks-test-token"
PROVIDER = "Microsoft.ContainerService"
CLUSTER_VERSION = "1.33.2"
SPOT_LABEL = ("kubernetes.azure.com/scalesetpriority", "spot")
SPOT_TAINT = "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"
RESERVED_LABEL_KEYS = frozenset({"agentpool", "accelerator", "storageprofile", "storagetier"})
RESERVED_LABEL_PREFIX = "kubernetes.azure.com/"
IMMUTABLE = (
    "vmSize",
    "osType",
    "scaleSetPriority",
    "scaleSetEvictionPolicy",
    "osDiskType",
    "osDiskSizeGB",
)
# Bytes AKS counts for an ephemeral OS disk per VM size: NC4as_T4_v3 as AKS answered in
# Azure/AKS#2635; NC8as_T4_v3 (360 GiB temp disk, twice NC4as's 180) scaled from it, an
# estimate; a size absent here has none (AKS answers "cache size of 0 bytes", Azure/AKS#2699).
EPHEMERAL_OS_BYTES = {
    "Standard_NC4as_T4_v3": 154_619_000_000,
    "Standard_NC8as_T4_v3": 2 * 154_619_000_000,
}
# Defaults AKS fills in on create, as its GET shows them (AKS REST reference, Agent Pools - Get
# example response; maxSurge 10% is the default for new pools since Kubernetes 1.28).
DEFAULTS: dict[str, Any] = {
    "orchestratorVersion": CLUSTER_VERSION,
    "osSKU": "Ubuntu",
    "osDiskSizeGB": 128,
    "osDiskType": "Managed",
    "kubeletDiskType": "OS",
    "maxPods": 250,
    "type": "VirtualMachineScaleSets",
    "enableNodePublicIP": False,
    "enableFIPS": False,
    "upgradeSettings": {"maxSurge": "10%"},
    "nodeImageVersion": "AKSUbuntu-2204gen2gpucontainerd-202611.10.0",
}
# The JSON types of the fields llmctl writes (the REST reference's types).
TYPES: dict[str, type | tuple[type, ...]] = {
    "vmSize": str,
    "mode": str,
    "osType": str,
    "count": int,
    "enableAutoScaling": bool,
    "minCount": int,
    "maxCount": int,
    "nodeLabels": dict,
    "nodeTaints": list,
    "scaleSetPriority": str,
    "scaleSetEvictionPolicy": str,
    "spotMaxPrice": (int, float),
    "osDiskType": str,
    "osDiskSizeGB": int,
    "tags": dict,
}


# name.value -> (localizedValue, limit, currentValue): a subscription that asked for T4 quota.
USAGES: dict[str, tuple[str, float, float]] = {
    "cores": ("Total Regional vCPUs", 100.0, 8.0),
    "lowPriorityCores": ("Total Regional Low-priority vCPUs", 16.0, 0.0),
    "standardNCASv3_T4Family": ("Standard NCASv3_T4 Family vCPUs", 16.0, 0.0),
    "standardDSv3Family": ("Standard DSv3 Family vCPUs", 100.0, 8.0),
}


def arm_error(status: int, code: str, message: str) -> Response:
    return Response(status, {"error": {"code": code, "message": message}})


def rest_property_names() -> frozenset[str]:
    """The agent pool property names azure-mgmt-containerservice's model knows (its REST names)."""
    from azure.mgmt.containerservice.models import AgentPoolManagedClusterAgentPoolProfileProperties

    props = AgentPoolManagedClusterAgentPoolProfileProperties()
    return frozenset(f._rest_name for f in props._attr_to_rest_field.values())


def validate_agent_pool(body: Any) -> str | None:
    """Why AKS would refuse this body's shape, or None: the SDK's model is the schema."""
    from azure.mgmt.containerservice.models import AgentPool

    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        return "the request body has no 'properties' object"
    model = AgentPool(body)  # the SDK's own model, as the client would build it
    props = model.as_dict().get("properties", {})
    unknown = sorted(set(props) - rest_property_names())
    if unknown:
        return f"Could not find member {unknown[0]!r} on object of type 'AgentPoolProperties'"
    for name, kind in TYPES.items():
        value = props.get(name)
        if value is None:
            continue
        if isinstance(value, bool) and kind is not bool:
            return f"Error converting value {value!r} for property {name!r}"
        if not isinstance(value, kind):
            return f"Error converting value {value!r} for property {name!r}"
    if not all(isinstance(v, str) for v in (props.get("nodeLabels") or {}).values()):
        return "nodeLabels values must be strings"
    if not all(isinstance(t, str) for t in props.get("nodeTaints") or []):
        return "nodeTaints must be strings key=value:Effect"
    return None


@dataclass
class FakeAks(PoolApi):
    CLUSTER = "llm-azure"
    subscription: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "llm-rg"
    put_error: Response | None = None
    # An error the next PUT's async operation ends with (accepted first, then Failed).
    operation_error: dict[str, str] | None = None
    usages: dict[str, tuple[str, float, float]] = field(default_factory=lambda: dict(USAGES))

    # ---- what tests use to make the stand-in look like a pool that has lived a while ----------

    def autoscale(self, name: str, count: int) -> None:
        """The cluster autoscaler moving the pool to `count` nodes (AKS reports it in `count`)."""
        self.pools[name]["properties"]["count"] = count

    # ---- the REST API -------------------------------------------------------------------------

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
        if len(parts) == 7 and parts[3] == "Microsoft.Compute" and parts[6] == "usages":
            return self._usages(parts[1])
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
                    "properties": {
                        "provisioningState": "Succeeded",
                        "kubernetesVersion": CLUSTER_VERSION,
                    },
                },
            )
        if len(parts) == 9 and request.method == "GET":
            return Response(200, {"value": copy.deepcopy(list(self.pools.values()))})
        name = parts[9]
        action = {"GET": "read", "PUT": "write", "DELETE": "delete"}[request.method]
        wanted = f"{PROVIDER}/managedClusters/agentPools/{action}"
        if self.forbidden == wanted:
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
            return Response(200, copy.deepcopy(pool))
        if request.method == "PUT":
            return self._put(request, scope, name, pool)
        if request.method == "DELETE":
            if pool is None:
                return Response(204)
            pool["properties"]["provisioningState"] = "Deleting"
            return self._accepted(request, 202, None, name, "delete")
        return arm_error(405, "MethodNotAllowed", request.method)

    def _put(
        self, request: Request, scope: str, name: str, pool: dict[str, Any] | None
    ) -> Response:
        if self.put_error is not None:
            return self.put_error
        # azure-core quotes the eTag it sends (`prep_if_match` -> `quote_etag`), as HTTP says.
        if_match = request.headers.get("if-match")
        if if_match is not None and (
            pool is None or if_match.strip('"') != pool["properties"]["eTag"].strip('"')
        ):
            return arm_error(
                412,
                "PreconditionFailed",
                f"Operation is not allowed because the agent pool {name} eTag "
                f"{if_match} does not match the current one.",
            )
        problem = validate_agent_pool(request.body)
        if problem:
            return arm_error(400, "InvalidRequestContent", problem)
        props: dict[str, Any] = {
            k: v
            for k, v in copy.deepcopy(request.body["properties"]).items()
            if k not in ("provisioningState", "eTag", "currentOrchestratorVersion")
        }
        old = pool["properties"] if pool is not None else None
        problem = self._refusal(props, old)
        if problem:
            return arm_error(400, *problem)
        stored = self._stored(scope, name, props, old)
        self.pools[name] = stored
        created = old is None
        return self._accepted(request, 201 if created else 200, stored, name, "put")

    def _usages(self, subscription: str) -> Response:
        if subscription != self.subscription:
            return arm_error(
                404,
                "SubscriptionNotFound",
                f"The subscription '{subscription}' could not be found.",
            )
        return Response(
            200,
            {
                "value": [
                    {
                        "unit": "Count",
                        "currentValue": int(current),
                        "limit": int(limit),
                        "name": {"value": name, "localizedValue": shown},
                    }
                    for name, (shown, limit, current) in self.usages.items()
                ]
            },
        )

    def _refusal(self, props: dict[str, Any], old: dict[str, Any] | None) -> tuple[str, str] | None:
        surge = (props.get("upgradeSettings") or {}).get("maxSurge")
        if props.get("scaleSetPriority") == "Spot" and surge is not None:
            return ("InvalidParameter", "Spot pools can't set max surge")
        if props.get("osDiskType") == "Ephemeral" and old is None:
            size = props.get("vmSize", "")
            cache = EPHEMERAL_OS_BYTES.get(size, 0)
            wanted = int(props.get("osDiskSizeGB") or DEFAULTS["osDiskSizeGB"]) * 2**30
            if wanted > cache:
                return (
                    "VMCacheSizeTooSmall",
                    f"The virtual machine size {size} has a cache size of {cache} bytes, but "
                    f"the OS disk requires {wanted} bytes. Use a VM size with larger cache or "
                    "disable ephemeral OS.",
                )
        had = (old or {}).get("nodeLabels") or {}
        for key, value in (props.get("nodeLabels") or {}).items():
            reserved = key in RESERVED_LABEL_KEYS or key.startswith(RESERVED_LABEL_PREFIX)
            if reserved and had.get(key) != value:
                return (
                    "InvalidParameter",
                    f"Label key {key!r} is reserved by AKS and cannot be set or changed.",
                )
            domain = key.partition("/")[0] if "/" in key else ""
            if domain.endswith(("kubernetes.io", "k8s.io")) and not domain.startswith(
                ("kubelet.kubernetes.io", "node.kubernetes.io")
            ):
                return (
                    "BadRequest",
                    "For Kubernetes version greater than or equal to 1.16, node label keys in "
                    "the 'kubernetes.io' or 'k8s.io' namespace must begin with an allowed prefix "
                    "(kubelet.kubernetes.io, node.kubernetes.io).",
                )
        if props.get("enableAutoScaling"):
            low, high = props.get("minCount"), props.get("maxCount")
            count = props.get("count", 0)
            if low is None or high is None:
                return ("InvalidParameter", "minCount and maxCount are required for autoscaling.")
            if high < 1 or low > high:
                return (
                    "InvalidParameter",
                    f"Invalid minCount {low} / maxCount {high}: maxCount must be at least 1 and "
                    "not below minCount.",
                )
            if not low <= count <= high:
                return (
                    "InvalidParameter",
                    f"The value of parameter agentPoolProfile.count {count} is invalid: it must "
                    f"be between minCount {low} and maxCount {high} when autoscaling.",
                )
        if old is not None:
            for key in IMMUTABLE:
                if key in props and props[key] != old.get(key):
                    return (
                        "PropertyChangeNotAllowed",
                        f"Changing property '{key}' is not allowed.",
                    )
        return None

    def _stored(
        self, scope: str, name: str, props: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        full = {**copy.deepcopy(DEFAULTS), **props}
        if full.get("scaleSetPriority") == "Spot":
            full["upgradeSettings"] = {"maxSurge": None}
        labels = dict(full.get("nodeLabels") or {})
        taints = list(full.get("nodeTaints") or [])
        if full.get("scaleSetPriority") == "Spot":
            if old is None:
                labels.setdefault(*SPOT_LABEL)
            if SPOT_TAINT not in taints:
                taints.append(SPOT_TAINT)
        full["nodeLabels"] = labels
        full["nodeTaints"] = taints
        full["provisioningState"] = "Creating" if old is None else "Updating"
        full["currentOrchestratorVersion"] = full["orchestratorVersion"]
        full["powerState"] = {"code": "Running"}
        full["eTag"] = f"etag-{next(self._ids)}"
        return {
            "id": scope,
            "name": name,
            "type": f"{PROVIDER}/managedClusters/agentPools",
            "properties": full,
        }

    def _accepted(self, request: Request, status: int, body: Any, name: str, kind: str) -> Response:
        op = f"op-{next(self._ids)}"
        error, self.operation_error = self.operation_error, None
        self.operations[op] = {"polls": ["InProgress"], "pool": name, "kind": kind, "error": error}
        url = (
            f"http://{request.headers['host']}/subscriptions/{self.subscription}/providers/"
            f"{PROVIDER}/locations/eastus/operations/{op}?api-version={request.query['api-version']}"
        )
        return Response(status, copy.deepcopy(body), {"Azure-AsyncOperation": url})

    def _operation(self, op: str) -> Response:
        state = self.operations.get(op)
        if state is None:
            return arm_error(404, "NotFound", f"operation {op}")
        if state["polls"]:
            state["polls"].pop(0)
            return Response(200, {"name": op, "status": "InProgress"})
        pool = self.pools.get(state["pool"])
        body: dict[str, Any] = {"name": op, "startTime": "2026-01-01T00:00:00Z"}
        if state["error"] is not None:
            body.update({"status": "Failed", "error": state["error"]})
            if pool is not None:
                pool["properties"]["provisioningState"] = "Failed"
            return Response(200, body)
        if state["kind"] == "delete":
            self.pools.pop(state["pool"], None)
        elif pool is not None:
            pool["properties"]["provisioningState"] = "Succeeded"
        body["status"] = "Succeeded"
        return Response(200, body)
