"""AWS: an EKS managed node group of spot T4 nodes that scales from zero, through boto3."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar

from llmctl import catalog
from llmctl.catalog import CloudName, Taint
from llmctl.clouds.base import (
    OWNER_KEY,
    OWNER_VALUE,
    QUOTA_WORDS,
    ApiRequest,
    Capacity,
    Cloud,
    Difference,
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
# The label cluster-autoscaler's AWS provider reads to know a node group's GPU type
# (`GPULabel = "k8s.amazonaws.com/accelerator"` in cloudprovider/aws/aws_cloud_provider.go);
# without it CA "may unnecessarily scale out multiple times" while the device plugin starts (its
# README's "Special note on GPU instances").
CA_GPU_LABEL = "k8s.amazonaws.com/accelerator"
# AWS region names: us-east-1, eu-central-2, us-gov-west-1, ap-southeast-5...
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
EKS_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+")
PERMISSION = re.compile(r"perform: ([A-Za-z0-9-]+:[A-Za-z0-9*]+)")
# The root volume of a GPU node: EKS's default 20 GiB fills with the NVIDIA AMI, a multi-GB CUDA
# llama.cpp image and the GPU add-ons' images (awslabs/amazon-eks-ami#13, eksctl-io/eksctl#780:
# disk-pressure evictions at 20 GB); `diskSize` is valid without a launch template only ("If you
# specify launchTemplate, then don't specify diskSize, or the node group deployment will fail":
# CreateNodegroup.diskSize in the EKS API reference), so with one it is the template's root
# volume.
GPU_ROOT_DISK_GIB = 80
# The GPU pool's local disk (issue 30): g4dn and g5 carry an NVMe instance store (125 GB on
# g4dn.xlarge) that nothing uses unless the node is told to. AL2023's nodeadm does it from a
# NodeConfig in the user data: `spec.instance.localStorage.strategy: RAID0` makes one array of
# the instance store disks and bind-mounts /var/lib/kubelet, /var/lib/containerd and
# /var/log/pods onto it (awslabs/amazon-eks-ami nodeadm/api/v1alpha1/nodeconfig_types.go,
# LocalStorageOptions; templates/shared/runtime/bin/setup-local-disks), so the pods' emptyDirs
# and the images are on NVMe. User data reaches a managed node group only through a launch
# template, and there it "must be in the MIME multi-part archive format ... because your user
# data is merged with Amazon EKS user data required for nodes to join the cluster" (EKS user
# guide, "Customize managed nodes with launch templates"; a plain script fails with
# Ec2LaunchTemplateInvalidConfiguration "User data was not in the MIME multipart format",
# aws-ia/terraform-aws-eks-blueprints#843). Without an AMI in the template EKS keeps choosing
# the AMI from amiType and adds its own NodeConfig part. The template must not name a subnet,
# an IAM instance profile or an instance type the node group also names (the same guide's table
# of settings prohibited in a launch template).
AL2023_ROOT_DEVICE = "/dev/xvda"
NODEADM_CONTENT_TYPE = "application/node.eks.aws"
MIME_BOUNDARY = "//"
LOCAL_STORAGE_STRATEGY = "RAID0"
# Shown by --dry-run where the version is the one CreateLaunchTemplate answers.
FROM_LAUNCH_TEMPLATE = "<the launch template version CreateLaunchTemplate returns>"
# The EC2 quotas G-family instances (g4dn, g5) draw on, in vCPUs (Service Quotas, service code
# ec2): "All G and VT Spot Instance Requests" and "Running On-Demand G and VT instances".
EC2_QUOTAS = {
    Capacity.SPOT: ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    Capacity.ON_DEMAND: ("L-DB2E81BA", "Running On-Demand G and VT instances"),
}
# Error codes AWS uses for API rate limits (botocore retries them first; this is after that).
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
THROTTLING_HINT = (
    "the AWS API is rate-limiting this account (botocore already retried); wait a minute and "
    "run the same command again"
)


def eks_client(region: str, endpoint_url: str | None = None) -> Any:
    """The one place an EKS client is built (boto3 also honours $AWS_ENDPOINT_URL).

    Building it reads the profile and the region, so its errors (unknown AWS_PROFILE, a malformed
    region) go through the same one-line messages as the calls'.
    """
    try:
        import boto3
    except ImportError:
        raise missing_sdk("boto3", CloudName.AWS) from None
    with _aws_errors(None, "creating an EKS client"):
        # A session of its own reads AWS_PROFILE and the config files now, not when boto3's
        # process-wide default session happened to be made.
        session = boto3.session.Session()
        return session.client("eks", region_name=region, endpoint_url=endpoint_url)


def aws_client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """Another AWS client (Service Quotas) from the same kind of session as EKS's."""
    try:
        import boto3
    except ImportError:
        raise missing_sdk("boto3", CloudName.AWS) from None
    with _aws_errors(None, f"creating a {service} client"):
        session = boto3.session.Session()
        return session.client(service, region_name=region, endpoint_url=endpoint_url)


def quota_code(spec: PoolSpec) -> tuple[str, str]:
    return EC2_QUOTAS[spec.capacity]


def raise_quota_command(spec: PoolSpec, code: str, value: float) -> str:
    return (
        f"aws service-quotas request-service-quota-increase --service-code ec2 --quota-code "
        f"{code} --desired-value {int(value)} --region {spec.location}"
    )


def node_template_tags(spec: PoolSpec) -> dict[str, str]:
    """Tags from which cluster-autoscaler builds a node at size zero: resources, labels, taints."""
    prefix = catalog.CLUSTER_AUTOSCALER_NODE_TEMPLATE_TAG
    tags = {f"{prefix}/resources/{spec.gpu_resource}": str(spec.gpus_per_node)}
    tags.update({f"{prefix}/label/{k}": v for k, v in spec.labels.items()})
    tags.update({f"{prefix}/taint/{t.key}": f"{t.value}:{t.effect}" for t in spec.taints})
    return tags


def launch_template_name(cluster: str, pool: str) -> str:
    """llmctl's launch template for one pool (EC2 allows 3-128 of [A-Za-z0-9().-/_]; an EKS
    cluster name is at most 100 of [A-Za-z0-9_-], so this always fits)."""
    return f"llmctl-{cluster}-{pool}"


def node_user_data() -> str:
    """The launch template's user data: one nodeadm NodeConfig part in a MIME multi-part
    archive (see LOCAL_STORAGE_STRATEGY's comment), the format EKS merges its own part into."""
    return (
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n'
        "\n"
        f"--{MIME_BOUNDARY}\n"
        f"Content-Type: {NODEADM_CONTENT_TYPE}\n"
        "\n"
        "apiVersion: node.eks.aws/v1alpha1\n"
        "kind: NodeConfig\n"
        "spec:\n"
        "  instance:\n"
        "    localStorage:\n"
        f"      strategy: {LOCAL_STORAGE_STRATEGY}\n"
        "\n"
        f"--{MIME_BOUNDARY}--\n"
    )


def launch_template_data() -> dict[str, Any]:
    """The LaunchTemplateData: the root volume (diskSize's place once a template is used) and
    the user data, base64 as CreateLaunchTemplate takes it; nothing EKS prohibits there."""
    import base64

    return {
        "BlockDeviceMappings": [
            {
                "DeviceName": AL2023_ROOT_DEVICE,
                "Ebs": {
                    "VolumeSize": GPU_ROOT_DISK_GIB,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "UserData": base64.b64encode(node_user_data().encode()).decode(),
    }


def create_launch_template_params(spec: PoolSpec) -> dict[str, Any]:
    """The CreateLaunchTemplate parameters, exactly as boto3 gets them, with llmctl's mark."""
    return {
        "LaunchTemplateName": launch_template_name(spec.cluster, spec.name),
        "LaunchTemplateData": launch_template_data(),
        "TagSpecifications": [
            {"ResourceType": "launch-template", "Tags": [{"Key": OWNER_KEY, "Value": OWNER_VALUE}]}
        ],
    }


def create_nodegroup_params(
    spec: PoolSpec,
    subnets: list[str] | None = None,
    node_role: str | None = None,
    template_version: str | None = None,
) -> dict[str, Any]:
    """The CreateNodegroup parameters, exactly as boto3 gets them: with the local disk, the
    launch template carries the root volume, so `diskSize` is left out."""
    disk: dict[str, Any] = (
        {
            "launchTemplate": {
                "name": launch_template_name(spec.cluster, spec.name),
                "version": template_version or FROM_LAUNCH_TEMPLATE,
            }
        }
        if spec.local_disk
        else {"diskSize": GPU_ROOT_DISK_GIB}
    )
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
        **disk,
        "tags": {**node_template_tags(spec), OWNER_KEY: OWNER_VALUE},
    }


def update_nodegroup_params(spec: PoolSpec, state: PoolState) -> dict[str, Any]:
    """The UpdateNodegroupConfig parameters that bring an existing group to the spec.

    Labels and taints are added or updated, never removed (others may have been set on purpose).
    `desiredSize` is sent only when the current size lies outside the new range: "If you use the
    Kubernetes Cluster Autoscaler, you shouldn't change the desiredSize value directly" (botocore
    EKS model, NodegroupScalingConfig.desiredSize).
    """
    params: dict[str, Any] = {"clusterName": spec.cluster, "nodegroupName": spec.name}
    if (state.min_nodes, state.max_nodes) != (spec.min_nodes, spec.max_nodes):
        scaling: dict[str, int] = {"minSize": spec.min_nodes, "maxSize": spec.max_nodes}
        current = state.current_nodes or 0
        if not spec.min_nodes <= current <= spec.max_nodes:
            scaling["desiredSize"] = min(max(current, spec.min_nodes), spec.max_nodes)
        params["scalingConfig"] = scaling
    labels = {k: v for k, v in spec.labels.items() if state.labels.get(k) != v}
    if labels:
        params["labels"] = {"addOrUpdateLabels": labels}
    taints = [t for t in spec.taints if t not in state.taints]
    if taints:
        params["taints"] = {
            "addOrUpdateTaints": [
                {"key": t.key, "value": t.value, "effect": EFFECT_TO_EKS[t.effect]} for t in taints
            ]
        }
    return params


class AwsCloud(Cloud):
    name = CloudName.AWS
    # What this cloud cannot do, with the reason the user is told.
    unsupported: ClassVar[Mapping[Feature, str]] = {
        Feature.PREEMPTIBLE: "EC2 has no preemptible VMs; Spot (the default) is the equivalent",
        Feature.ZERO_MAX_NODES: (
            "EKS requires a node group's maxSize to be at least 1, so scale-to-zero sets min 0, "
            "desired 0 and max 1; a cluster-autoscaler can still start one GPU node for a pending "
            "GPU pod (delete the pool to be sure none starts)"
        ),
        Feature.ZONES: "EKS node groups take their zones from their subnets (--subnet)",
        Feature.SERVICE_ACCOUNT: "EKS nodes take an IAM role (--node-role)",
    }
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

    def _ec2(self, spec: PoolSpec) -> Any:
        key = f"ec2:{spec.location}"
        if key not in self._clients:
            self._clients[key] = aws_client("ec2", spec.location, self.endpoint_url)
        return self._clients[key]

    def local_disk_text(self, spec: PoolSpec) -> str:
        return (
            f"the NVMe instance store as one {LOCAL_STORAGE_STRATEGY} array for the kubelet "
            f"(launch template {launch_template_name(spec.cluster, spec.name)})"
        )

    def create_requests(self, spec: PoolSpec) -> list[ApiRequest]:
        template = (
            [
                ApiRequest(
                    "POST",
                    # Or CreateLaunchTemplateVersion where it exists with other data.
                    f"ec2:CreateLaunchTemplate (https://ec2.{spec.location}.amazonaws.com/)",
                    create_launch_template_params(spec),
                )
            ]
            if spec.local_disk
            else []
        )
        return template + [
            ApiRequest(
                "POST",
                f"eks:CreateNodegroup (https://eks.{spec.location}.amazonaws.com/clusters/"
                f"{spec.cluster}/node-groups)",
                create_nodegroup_params(spec),
            )
        ]

    def complete_spec(self, spec: PoolSpec, env: Mapping[str, str]) -> PoolSpec:
        require_names(
            (
                "--region",
                spec.location,
                REGION,
                "an AWS region name",
                "for example us-east-1 or eu-west-2 (`aws ec2 describe-regions` lists them)",
            ),
            (
                "--cluster",
                spec.cluster,
                EKS_NAME,
                "an EKS cluster name",
                "letters, digits, - and _, starting with a letter or digit, at most 100",
            ),
        )
        spec = replace(spec, labels={**spec.labels, CA_GPU_LABEL: spec.accelerator})
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

    def pool_names(self, spec: PoolSpec) -> list[str]:
        eks = self._eks(spec)
        with _aws_errors(spec, "eks:ListNodegroups"):
            return [
                n
                for page in eks.get_paginator("list_nodegroups").paginate(clusterName=spec.cluster)
                for n in page["nodegroups"]
            ]

    def quota_hint(self, spec: PoolSpec) -> str:
        code, name = quota_code(spec)
        needed = spec.vcpus_per_node * spec.max_nodes
        return (
            f'this is the EC2 quota "{name}" ({code}, in vCPUs; {needed} for '
            f"{spec.max_nodes} x {spec.instance_type}), shared by every G instance type, so "
            f"another type or deleting the pool does not help; raise it: "
            + raise_quota_command(spec, code, needed)
        )

    def read_quotas(self, spec: PoolSpec) -> QuotaReport:
        """Service Quotas GetServiceQuota (the applied value), or the AWS default where the
        account has none applied ("If the applied quota value is not available for a quota, the
        quota is not retrieved": GetServiceQuota in the Service Quotas API reference)."""
        code, name = quota_code(spec)
        try:
            client = self._quotas(spec)
            with _aws_errors(spec, "servicequotas:GetServiceQuota"):
                value = _quota_value(client, code)
        except LlmctlError as exc:
            return QuotaReport(unread=exc.format_message().splitlines()[0])
        needed = spec.vcpus_per_node * spec.max_nodes
        quota = Quota(
            name=f"{name} ({code})",
            limit=value,
            usage=None,
            needed=needed,
            unit="vCPUs",
            raise_how=raise_quota_command(spec, code, needed),
        )
        return QuotaReport((quota,))

    def _quotas(self, spec: PoolSpec) -> Any:
        key = f"service-quotas:{spec.location}"
        if key not in self._clients:
            self._clients[key] = aws_client("service-quotas", spec.location, self.endpoint_url)
        return self._clients[key]

    def differences(self, spec: PoolSpec, state: PoolState) -> tuple[Difference, ...]:
        diffs = super().differences(spec, state)
        if state.image != catalog.EKS_GPU_AMI_TYPE:
            # An AMI type is chosen at creation (an AL2 GPU group is end of life): recreate.
            return (*diffs, Difference("AMI type", catalog.EKS_GPU_AMI_TYPE, state.image, False))
        return diffs

    def ensure_launch_template(self, spec: PoolSpec) -> str:
        """llmctl's launch template for the pool, made or brought to launch_template_data():
        the version to give the node group. Idempotent: a template left by a failed create is
        reused when its latest version holds the same data, else gets a new version."""
        from botocore.exceptions import ClientError

        ec2 = self._ec2(spec)
        name = launch_template_name(spec.cluster, spec.name)
        data = launch_template_data()
        with _aws_errors(spec, "ec2:DescribeLaunchTemplateVersions"):
            try:
                latest = ec2.describe_launch_template_versions(
                    LaunchTemplateName=name, Versions=["$Latest"]
                )["LaunchTemplateVersions"]
            except ClientError as exc:
                if not _template_missing(exc):
                    raise
                latest = []
        if not latest:
            with _aws_errors(spec, "ec2:CreateLaunchTemplate"):
                made = ec2.create_launch_template(**create_launch_template_params(spec))
            return str(made["LaunchTemplate"]["LatestVersionNumber"])
        have = latest[0].get("LaunchTemplateData", {})
        if all(have.get(key) == value for key, value in data.items()):
            return str(latest[0]["VersionNumber"])
        with _aws_errors(spec, "ec2:CreateLaunchTemplateVersion"):
            made = ec2.create_launch_template_version(
                LaunchTemplateName=name, LaunchTemplateData=data
            )
        return str(made["LaunchTemplateVersion"]["VersionNumber"])

    def delete_launch_template(self, spec: PoolSpec) -> None:
        """llmctl's launch template, once its node group is gone; one without llmctl's mark (or
        none) is left alone."""
        from botocore.exceptions import ClientError

        ec2 = self._ec2(spec)
        name = launch_template_name(spec.cluster, spec.name)
        with _aws_errors(spec, "ec2:DescribeLaunchTemplates"):
            try:
                found = ec2.describe_launch_templates(LaunchTemplateNames=[name])
            except ClientError as exc:
                if _template_missing(exc):
                    return
                raise
        for template in found.get("LaunchTemplates", []):
            tags = {t["Key"]: t["Value"] for t in template.get("Tags", [])}
            if tags.get(OWNER_KEY) == OWNER_VALUE:
                with _aws_errors(spec, "ec2:DeleteLaunchTemplate"):
                    ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])

    def create_pool(self, spec: PoolSpec, progress: Progress) -> None:
        subnets, role = self._subnets_and_role(spec)
        version = self.ensure_launch_template(spec) if spec.local_disk else None
        params = create_nodegroup_params(spec, subnets, role, version)
        with _aws_errors(spec, "eks:CreateNodegroup"):
            self._eks(spec).create_nodegroup(**params)
        self.wait_until_ready(spec, progress)

    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        state = self.read_pool(spec)
        if state is None:
            raise LlmctlError(f"EKS node group {spec.name!r} disappeared while llmctl read it")
        if not state.owned:  # adopted: UpdateNodegroupConfig changes no tags, TagResource does
            eks = self._eks(spec)
            with _aws_errors(spec, "eks:TagResource"):
                arn = eks.describe_nodegroup(clusterName=spec.cluster, nodegroupName=spec.name)[
                    "nodegroup"
                ]["nodegroupArn"]
                eks.tag_resource(resourceArn=arn, tags={OWNER_KEY: OWNER_VALUE})
        params = update_nodegroup_params(spec, state)
        if set(params) - {"clusterName", "nodegroupName"}:
            self._update(spec, params, progress)

    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None:
        # EKS refuses maxSize 0 (see `unsupported`): desired 0 stops the nodes, max 1 is the floor.
        params = {
            "clusterName": spec.cluster,
            "nodegroupName": spec.name,
            "scalingConfig": {"minSize": 0, "maxSize": 1, "desiredSize": 0},
        }
        self._update(spec, params, progress)

    def _update(self, spec: PoolSpec, params: dict[str, Any], progress: Progress) -> None:
        """UpdateNodegroupConfig, then DescribeUpdate until the update ends (botocore has no
        waiter for updates); a Failed or Cancelled update is an error with EKS's reasons."""
        with _aws_errors(spec, "eks:UpdateNodegroupConfig"):
            update = self._eks(spec).update_nodegroup_config(**params)["update"]
        self._follow_update(spec, update, progress)
        self.wait_until_ready(spec, progress)

    def _follow_update(self, spec: PoolSpec, update: dict[str, Any], progress: Progress) -> None:
        import time

        for attempt in range(self.max_attempts):
            status = update.get("status", "InProgress")
            progress(f"update {status}")
            if status == "Successful":
                return
            if status in ("Failed", "Cancelled"):
                errors = "; ".join(
                    f"{e.get('errorCode')}: {e.get('errorMessage')}"
                    for e in update.get("errors", [])
                )
                raise LlmctlError(
                    f"EKS update {update.get('id')} of node group {spec.name!r} {status.lower()}"
                    + (f": {errors}" if errors else ""),
                    hint=f"see `aws eks describe-update --name {spec.cluster} --nodegroup-name "
                    f"{spec.name} --update-id {update.get('id')} --region {spec.location}`",
                )
            if attempt:
                time.sleep(self.poll_delay)
            with _aws_errors(spec, "eks:DescribeUpdate"):
                update = self._eks(spec).describe_update(
                    name=spec.cluster, nodegroupName=spec.name, updateId=update["id"]
                )["update"]
        raise LlmctlError(
            f"EKS update {update.get('id')} of node group {spec.name!r} still "
            f"{update.get('status')} after {self.max_attempts} checks",
            hint="it carries on; check it with `llmctl gpu status`",
        )

    def delete_pool(self, spec: PoolSpec, progress: Progress) -> None:
        with _aws_errors(spec, "eks:DeleteNodegroup"):
            self._eks(spec).delete_nodegroup(clusterName=spec.cluster, nodegroupName=spec.name)
        progress("DELETING")
        self._poll(spec, progress, until_gone=True)
        # Only now: EC2 refuses to delete a launch template an Auto Scaling group still uses.
        self.delete_launch_template(spec)

    def wait_until_ready(self, spec: PoolSpec, progress: Progress) -> None:
        progress("waiting for ACTIVE")
        self._poll(spec, progress, until_gone=False)

    def _poll(self, spec: PoolSpec, progress: Progress, *, until_gone: bool) -> None:
        """DescribeNodegroup until ACTIVE (or gone); a failed or DEGRADED group ends the wait at
        once, where botocore's NodegroupActive waiter would keep polling DEGRADED for 30 min."""
        import time

        state: PoolState | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(self.poll_delay)
            eks = self._eks(spec)
            with _aws_errors(spec, "eks:DescribeNodegroup"):
                try:
                    group = eks.describe_nodegroup(
                        clusterName=spec.cluster, nodegroupName=spec.name
                    )
                except eks.exceptions.ResourceNotFoundException:
                    if until_gone:
                        return
                    raise LlmctlError(f"EKS node group {spec.name!r} disappeared") from None
            state = _state(group["nodegroup"])
            if state.status in self.failed_statuses:
                break
            if not until_gone and state.status == "ACTIVE":
                return
            if attempt:
                progress(state.status)
        status = state.status if state else "unknown"
        problems = "; ".join(state.problems) if state else ""
        message = f"EKS node group {spec.name!r} did not become " + (
            "deleted" if until_gone else "ready"
        )
        message += f": status {status}" + (f": {problems}" if problems else "")
        hint = (
            self.quota_hint(spec)
            if QUOTA_WORDS.search(problems)
            else capacity_hint(spec.cloud)
            if CAPACITY_WORDS.search(problems)
            else f"see `aws eks describe-nodegroup --cluster-name {spec.cluster} "
            f"--nodegroup-name {spec.name} --region {spec.location}`"
        )
        raise LlmctlError(message, hint=hint)


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
        image=str(group.get("amiType", "")),
        owned=(group.get("tags") or {}).get(OWNER_KEY) == OWNER_VALUE,
        # A group keeps the launch template it was created with ("You cannot later specify a
        # different launch template ID or name", CreateNodegroup.launchTemplate), so its name
        # says whether it is llmctl's, with the local disk.
        local_disk=(group.get("launchTemplate") or {}).get("name")
        == launch_template_name(str(group.get("clusterName", "")), str(group["nodegroupName"])),
    )


def _template_missing(exc: Any) -> bool:
    """EC2's answer for a launch template name that does not exist."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {
        "InvalidLaunchTemplateName.NotFoundException",
        "InvalidLaunchTemplateId.NotFound",
        "InvalidLaunchTemplateName.NotFound",
    }


def _quota_value(client: Any, code: str) -> float:
    from botocore.exceptions import ClientError

    try:
        answer = client.get_service_quota(ServiceCode="ec2", QuotaCode=code)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
            raise
        answer = client.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)
    return float(answer["Quota"]["Value"])


@contextmanager
def _aws_errors(spec: PoolSpec | None, action: str) -> Iterator[None]:
    """botocore's exceptions, turned into one sentence and what to do about it."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        CredentialRetrievalError,
        EndpointConnectionError,
        InvalidRegionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        SSOError,
        TokenRetrievalError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    try:
        yield
    except (
        NoCredentialsError,
        PartialCredentialsError,
        TokenRetrievalError,
        CredentialRetrievalError,
    ) as exc:
        raise LlmctlError(f"no usable AWS credentials: {exc}", hint=CREDENTIALS_HINT) from None
    except ProfileNotFound as exc:
        raise ConfigError(
            f"AWS profile not found: {exc}",
            hint="set AWS_PROFILE to a profile in ~/.aws/config (`aws configure list-profiles` "
            "lists them), or unset it",
        ) from None
    except SSOError as exc:  # SSOTokenLoadError, UnauthorizedSSOTokenError
        raise LlmctlError(
            f"the AWS SSO session is missing or expired: {exc}",
            hint="run `aws sso login` (with the same AWS_PROFILE), then try again",
        ) from None
    except (InvalidRegionError, NoRegionError) as exc:
        raise ConfigError(
            f"unusable AWS region: {exc}", hint="pass --region, e.g. us-east-1"
        ) from None
    except (EndpointConnectionError, BotoConnectionError) as exc:
        raise LlmctlError(
            f"cannot reach the {'Service Quotas' if 'servicequotas' in action else 'EKS'} API: "
            f"{exc}",
            hint="check --region and your network",
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
        if code in THROTTLING_CODES:
            raise LlmctlError(
                f"{action} was throttled ({code}): {message}", hint=THROTTLING_HINT
            ) from None
        if code in {"ResourceLimitExceededException", "ServiceQuotaExceededException"}:
            raise LlmctlError(
                f"AWS quota exceeded: {message}", hint=capacity_hint(CloudName.AWS)
            ) from None
        if code == "ResourceNotFoundException":
            raise  # the callers know what was not found
        if code == "ResourceInUseException":
            raise LlmctlError(
                f"{action} refused: {message}",
                hint="another update of the node group is in progress; wait until it ends "
                "(`llmctl gpu status`) and run the same command again",
            ) from None
        raise LlmctlError(f"{action} failed ({code}): {message}") from None
    except BotoCoreError as exc:  # anything else botocore raises: still one line
        raise LlmctlError(f"{action} failed: {exc}") from None
