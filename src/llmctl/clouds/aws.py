"""AWS: an EKS managed node group of spot T4 nodes that scales from zero, through boto3."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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

# EKS spells taint effects in its own enum.
EFFECT_TO_EKS = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}
EFFECT_FROM_EKS = {v: k for k, v in EFFECT_TO_EKS.items()}
CAPACITY_TO_EKS = {Capacity.SPOT: "SPOT", Capacity.ON_DEMAND: "ON_DEMAND"}
CAPACITY_FROM_EKS = {v: k.value for k, v in CAPACITY_TO_EKS.items()}

# Shown by --dry-run where a value is read from the cluster at run time.
FROM_EXISTING_NODE_GROUP = "<copied from the cluster's existing node group at run time>"

CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in "
    "~/.aws/credentials or ~/.aws/config; or run `aws configure` (or `aws sso login`)"
)
# Words in EC2 launch failures (node group health issues) that mean "no capacity or quota".
CAPACITY_WORDS = re.compile(
    r"capacity|vcpu limit|quota|InsufficientInstanceCapacity|MaxSpotInstanceCountExceeded",
    re.IGNORECASE,
)
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+")
PERMISSION = re.compile(r"perform: ([A-Za-z0-9-]+:[A-Za-z0-9*]+)")


def eks_client(region: str, endpoint_url: str | None = None) -> Any:
    """The one place an EKS client is built (boto3 also honours $AWS_ENDPOINT_URL)."""
    try:
        import boto3
    except ImportError:
        raise missing_sdk("boto3", CloudName.AWS) from None
    return boto3.client("eks", region_name=region, endpoint_url=endpoint_url)


def node_template_tags(spec: PoolSpec) -> dict[str, str]:
    """Tags from which cluster-autoscaler builds a node at size zero: resources, labels, taints."""
    prefix = catalog.CLUSTER_AUTOSCALER_NODE_TEMPLATE_TAG
    tags = {f"{prefix}/resources/{spec.gpu_resource}": str(spec.gpus_per_node)}
    tags.update({f"{prefix}/label/{k}": v for k, v in spec.labels.items()})
    tags.update({f"{prefix}/taint/{t.key}": f"{t.value}:{t.effect}" for t in spec.taints})
    return tags


def create_nodegroup_params(
    spec: PoolSpec, subnets: list[str] | None = None, node_role: str | None = None
) -> dict[str, Any]:
    """The CreateNodegroup parameters, exactly as boto3 gets them."""
    return {
        "clusterName": spec.cluster,
        "nodegroupName": spec.name,
        "scalingConfig": {
            "minSize": spec.min_nodes,
            "maxSize": spec.max_nodes,
            "desiredSize": spec.min_nodes,
        },
        "subnets": subnets or list(spec.subnets) or [FROM_EXISTING_NODE_GROUP],
        "instanceTypes": [spec.instance_type],
        "amiType": catalog.EKS_GPU_AMI_TYPE,
        "capacityType": CAPACITY_TO_EKS[spec.capacity],
        "nodeRole": node_role or spec.node_role or FROM_EXISTING_NODE_GROUP,
        "labels": dict(spec.labels),
        "taints": [
            {"key": t.key, "value": t.value, "effect": EFFECT_TO_EKS[t.effect]} for t in spec.taints
        ],
        "tags": node_template_tags(spec),
    }


class AwsCloud(Cloud):
    name = CloudName.AWS
    busy_statuses: ClassVar[frozenset[str]] = frozenset({"CREATING", "UPDATING"})
    deleting_statuses: ClassVar[frozenset[str]] = frozenset({"DELETING"})
    failed_statuses: ClassVar[frozenset[str]] = frozenset(
        {"CREATE_FAILED", "DELETE_FAILED", "DEGRADED"}
    )

    def __init__(
        self, endpoint_url: str | None = None, poll_delay: int = 15, max_attempts: int = 120
    ) -> None:
        self.endpoint_url = endpoint_url
        self.poll_delay = poll_delay
        self.max_attempts = max_attempts
        self._clients: dict[str, Any] = {}

    def _eks(self, spec: PoolSpec) -> Any:
        if spec.location not in self._clients:
            self._clients[spec.location] = eks_client(spec.location, self.endpoint_url)
        return self._clients[spec.location]

    def create_requests(self, spec: PoolSpec) -> list[ApiRequest]:
        return [
            ApiRequest(
                "POST",
                f"eks:CreateNodegroup (https://eks.{spec.location}.amazonaws.com/clusters/"
                f"{spec.cluster}/node-groups)",
                create_nodegroup_params(spec),
            )
        ]

    def complete_spec(self, spec: PoolSpec, env: Mapping[str, str]) -> PoolSpec:
        if spec.node_role is not None and not ROLE_ARN.fullmatch(spec.node_role):
            raise ConfigError(
                f"--node-role {spec.node_role!r} is not an IAM role ARN",
                hint="for example arn:aws:iam::123456789012:role/eks-node",
            )
        return spec

    def kubeconfig_command(self, spec: PoolSpec) -> str:
        return f"aws eks update-kubeconfig --name {spec.cluster} --region {spec.location}"

    # ---- adapter ------------------------------------------------------------------------------

    def read_pool(self, spec: PoolSpec) -> PoolState | None:
        eks = self._eks(spec)
        with _aws_errors(spec, "eks:DescribeNodegroup"):
            try:
                group = eks.describe_nodegroup(clusterName=spec.cluster, nodegroupName=spec.name)
            except eks.exceptions.ResourceNotFoundException:
                self._require_cluster(spec)
                return None
        return _state(group["nodegroup"])

    def _require_cluster(self, spec: PoolSpec) -> None:
        eks = self._eks(spec)
        with _aws_errors(spec, "eks:DescribeCluster"):
            try:
                eks.describe_cluster(name=spec.cluster)
            except eks.exceptions.ResourceNotFoundException:
                raise LlmctlError(
                    f"EKS cluster {spec.cluster!r} not found in region {spec.location}",
                    hint=f"check --cluster and --region; `aws eks list-clusters --region "
                    f"{spec.location}` lists the clusters there",
                ) from None

    def _subnets_and_role(self, spec: PoolSpec) -> tuple[list[str], str]:
        """Subnets and node role as given, or copied from a node group the cluster already has."""
        if spec.subnets and spec.node_role:
            return list(spec.subnets), spec.node_role
        eks = self._eks(spec)
        with _aws_errors(spec, "eks:ListNodegroups"):
            names = [
                n
                for page in eks.get_paginator("list_nodegroups").paginate(clusterName=spec.cluster)
                for n in page["nodegroups"]
                if n != spec.name
            ]
        if not names:
            raise LlmctlError(
                f"EKS cluster {spec.cluster!r} has no node group to copy subnets and the node "
                "role from",
                hint="pass --subnet (repeatable) and --node-role ARN",
            )
        with _aws_errors(spec, "eks:DescribeNodegroup"):
            other = eks.describe_nodegroup(clusterName=spec.cluster, nodegroupName=sorted(names)[0])
        group = other["nodegroup"]
        return list(spec.subnets) or list(group["subnets"]), spec.node_role or group["nodeRole"]

    def create_pool(self, spec: PoolSpec, progress: Progress) -> None:
        subnets, role = self._subnets_and_role(spec)
        params = create_nodegroup_params(spec, subnets, role)
        with _aws_errors(spec, "eks:CreateNodegroup"):
            self._eks(spec).create_nodegroup(**params)
        self.wait_until_ready(spec, progress)

    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        state = self.read_pool(spec)
        current = state.current_nodes if state is not None and state.current_nodes else 0
        desired = min(max(current, spec.min_nodes), spec.max_nodes)
        self._set_scaling(spec, spec.min_nodes, desired, spec.max_nodes)
        self.wait_until_ready(spec, progress)

    def _set_scaling(self, spec: PoolSpec, min_size: int, desired: int, max_size: int) -> None:
        with _aws_errors(spec, "eks:UpdateNodegroupConfig"):
            self._eks(spec).update_nodegroup_config(
                clusterName=spec.cluster,
                nodegroupName=spec.name,
                scalingConfig={"minSize": min_size, "maxSize": max_size, "desiredSize": desired},
            )

    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None:
        # EKS refuses maxSize 0 (see UNSUPPORTED): desired 0 stops the nodes, max 1 is the floor.
        self._set_scaling(spec, 0, 0, 1)
        self.wait_until_ready(spec, progress)

    def delete_pool(self, spec: PoolSpec, progress: Progress) -> None:
        with _aws_errors(spec, "eks:DeleteNodegroup"):
            self._eks(spec).delete_nodegroup(clusterName=spec.cluster, nodegroupName=spec.name)
        progress("DELETING")
        self._wait(spec, "nodegroup_deleted")

    def wait_until_ready(self, spec: PoolSpec, progress: Progress) -> None:
        progress("waiting for ACTIVE")
        self._wait(spec, "nodegroup_active")

    def _wait(self, spec: PoolSpec, waiter_name: str) -> None:
        from botocore.exceptions import WaiterError

        waiter = self._eks(spec).get_waiter(waiter_name)
        try:
            with _aws_errors(spec, "eks:DescribeNodegroup"):
                waiter.wait(
                    clusterName=spec.cluster,
                    nodegroupName=spec.name,
                    WaiterConfig={"Delay": self.poll_delay, "MaxAttempts": self.max_attempts},
                )
        except WaiterError as exc:
            group = exc.last_response.get("nodegroup", {}) if exc.last_response else {}
            state = _state(group) if group else None
            problems = "; ".join(state.problems) if state else ""
            status = state.status if state else "unknown"
            message = f"EKS node group {spec.name!r} did not become ready: status {status}"
            if problems:
                message += f": {problems}"
            hint = (
                capacity_hint(spec.cloud)
                if CAPACITY_WORDS.search(problems)
                else f"see `aws eks describe-nodegroup --cluster-name {spec.cluster} "
                f"--nodegroup-name {spec.name} --region {spec.location}`"
            )
            raise LlmctlError(message, hint=hint) from None


def _state(group: dict[str, Any]) -> PoolState:
    scaling = group.get("scalingConfig", {})
    issues = group.get("health", {}).get("issues", [])
    return PoolState(
        name=group["nodegroupName"],
        instance_type=",".join(group.get("instanceTypes") or []),
        capacity=CAPACITY_FROM_EKS.get(
            group.get("capacityType", ""), str(group.get("capacityType"))
        ),
        min_nodes=int(scaling.get("minSize", 0)),
        current_nodes=int(scaling.get("desiredSize", 0)),
        max_nodes=int(scaling.get("maxSize", 0)),
        status=group.get("status", "UNKNOWN"),
        labels=dict(group.get("labels") or {}),
        taints=tuple(
            Taint(t["key"], t.get("value", ""), EFFECT_FROM_EKS.get(t["effect"], t["effect"]))
            for t in group.get("taints") or []
        ),
        problems=tuple(f"{i.get('code')}: {i.get('message')}" for i in issues),
    )


@contextmanager
def _aws_errors(spec: PoolSpec, action: str) -> Iterator[None]:
    """botocore's exceptions, turned into one sentence and what to do about it."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        TokenRetrievalError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError, TokenRetrievalError) as exc:
        raise LlmctlError(f"no usable AWS credentials: {exc}", hint=CREDENTIALS_HINT) from None
    except EndpointConnectionError as exc:
        raise LlmctlError(
            f"cannot reach the EKS API: {exc}", hint="check --region and your network"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}:
            found = PERMISSION.search(message)
            permission = found.group(1) if found else action
            raise LlmctlError(
                f"permission denied: the AWS identity may not call {permission}",
                hint=f"grant {permission} to it (docs/gpu.md lists every IAM action `llmctl gpu` "
                f"uses); AWS said: {message}",
            ) from None
        if code in {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException"}:
            raise LlmctlError(
                f"AWS rejected the credentials: {message}", hint=CREDENTIALS_HINT
            ) from None
        if code in {"ResourceLimitExceededException", "ServiceQuotaExceededException"}:
            raise LlmctlError(
                f"AWS quota exceeded: {message}", hint=capacity_hint(spec.cloud)
            ) from None
        if code == "ResourceNotFoundException":
            raise  # the callers know what was not found
        raise LlmctlError(f"{action} failed ({code}): {message}") from None
