"""The EKS adapter against moto (create, re-run, update, status, disable, waiters) and the
error paths through botocore's own parsing of the error bodies AWS sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from llmctl.clouds.aws import AwsCloud, create_nodegroup_params
from llmctl.clouds.base import PoolDiffersError, PoolOptions, PoolSpec
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError

REGION = "us-east-1"
CLUSTER = "llm-aws"
ROLE = "arn:aws:iam::123456789012:role/eks-node"


@pytest.fixture
def eks() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("eks", region_name=REGION)
        client.create_cluster(
            name=CLUSTER,
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-a", "subnet-b"]},
        )
        client.create_nodegroup(
            clusterName=CLUSTER,
            nodegroupName="system",
            subnets=["subnet-a", "subnet-b"],
            nodeRole=ROLE,
        )
        yield client


def spec_for(**options: Any) -> tuple[AwsCloud, PoolSpec]:
    cloud = AwsCloud(poll_delay=1, max_attempts=3)
    return cloud, cloud.node_pool_spec(Stack(), PoolOptions(**options))


def test_create_sets_every_field(eks: Any) -> None:
    cloud, spec = spec_for()
    seen: list[str] = []
    result = cloud.ensure_gpu_pool(spec, seen.append)
    assert result.action == "created"
    assert seen == ["waiting for ACTIVE"]
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["instanceTypes"] == ["g4dn.xlarge"]
    assert group["capacityType"] == "SPOT"
    assert group["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group["scalingConfig"] == {"minSize": 0, "maxSize": 2, "desiredSize": 0}
    assert group["labels"] == {
        "compute": "gpu-enabled",
        "llmctl.dev/accelerator": "nvidia-tesla-t4",
    }
    assert group["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
    ]
    assert group["subnets"] == ["subnet-a", "subnet-b"]
    assert group["nodeRole"] == ROLE
    prefix = "k8s.io/cluster-autoscaler/node-template"
    assert group["tags"] == {
        f"{prefix}/resources/nvidia.com/gpu": "1",
        f"{prefix}/label/compute": "gpu-enabled",
        f"{prefix}/label/llmctl.dev/accelerator": "nvidia-tesla-t4",
        f"{prefix}/taint/nvidia.com/gpu": "present:NoSchedule",
    }


def test_on_demand_and_explicit_network(eks: Any) -> None:
    cloud, spec = spec_for(
        on_demand=True,
        max_nodes=5,
        subnets=("subnet-x",),
        node_role="arn:aws:iam::123456789012:role/gpu",
    )
    cloud.ensure_gpu_pool(spec)
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["capacityType"] == "ON_DEMAND"
    assert group["scalingConfig"]["maxSize"] == 5
    assert (group["subnets"], group["nodeRole"]) == (
        ["subnet-x"],
        "arn:aws:iam::123456789012:role/gpu",
    )


def test_second_run_changes_nothing(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    before = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    result = cloud.ensure_gpu_pool(spec)
    assert result.action == "unchanged"
    after = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert after["modifiedAt"] == before["modifiedAt"]
    assert sorted(eks.list_nodegroups(clusterName=CLUSTER)["nodegroups"]) == ["gpu-t4", "system"]


def test_scaling_difference_is_updated_in_place(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    _, bigger = spec_for(max_nodes=3)
    result = cloud.ensure_gpu_pool(bigger)
    assert result.action == "updated"
    assert [(d.field, d.have, d.want) for d in result.differences] == [("max nodes", "2", "3")]
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["scalingConfig"] == {"minSize": 0, "maxSize": 3, "desiredSize": 0}


def test_immutable_difference_is_reported_not_changed(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    _, other = spec_for(on_demand=True, instance_type="g4dn.2xlarge", max_nodes=3)
    with pytest.raises(PoolDiffersError) as info:
        cloud.ensure_gpu_pool(other)
    fields = {d.field for d in info.value.differences}
    assert fields == {"instance type", "capacity type", "max nodes"}
    assert "llmctl gpu disable --cloud aws" in (info.value.hint or "")
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["scalingConfig"]["maxSize"] == 2  # untouched


def test_status_reads_the_pool(eks: Any) -> None:
    cloud, spec = spec_for()
    assert cloud.read_pool(spec) is None
    cloud.ensure_gpu_pool(spec)
    state = cloud.read_pool(spec)
    assert state is not None
    assert (
        state.instance_type,
        state.capacity,
        state.min_nodes,
        state.current_nodes,
        state.max_nodes,
        state.status,
    ) == ("g4dn.xlarge", "spot", 0, 0, 2, "ACTIVE")


def test_disable_deletes_and_waits(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    seen: list[str] = []
    assert cloud.disable(spec, scale_to_zero=False, progress=seen.append) is True
    assert "DELETING" in seen
    assert eks.list_nodegroups(clusterName=CLUSTER)["nodegroups"] == ["system"]
    assert cloud.disable(spec, scale_to_zero=False) is False


def test_scale_to_zero_keeps_the_pool(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    cloud.disable(spec, scale_to_zero=True)
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    # EKS refuses maxSize 0; desired 0 and max 1 is as low as it goes.
    assert group["scalingConfig"] == {"minSize": 0, "maxSize": 1, "desiredSize": 0}
    assert cloud.ensure_gpu_pool(spec).action == "updated"


def test_cluster_not_found() -> None:
    with mock_aws():
        cloud, spec = spec_for(cluster="missing")
        with pytest.raises(
            LlmctlError, match="EKS cluster 'missing' not found in region us-east-1"
        ):
            cloud.ensure_gpu_pool(spec)


def test_no_node_group_to_copy_from() -> None:
    with mock_aws():
        client = boto3.client("eks", region_name=REGION)
        client.create_cluster(
            name="bare",
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-a"]},
        )
        cloud, spec = spec_for(cluster="bare")
        with pytest.raises(LlmctlError, match="no node group to copy") as info:
            cloud.ensure_gpu_pool(spec)
        assert "--subnet" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_no_credentials_names_the_variables() -> None:
    cloud = AwsCloud(endpoint_url="http://127.0.0.1:9")
    spec = cloud.node_pool_spec(Stack(), PoolOptions())
    with pytest.raises(LlmctlError, match="no usable AWS credentials") as info:
        cloud.read_pool(spec)
    hint = info.value.hint or ""
    assert "AWS_ACCESS_KEY_ID" in hint and "AWS_PROFILE" in hint and "aws configure" in hint


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def answer(
    cloud: AwsCloud,
    spec: PoolSpec,
    operation: str,
    status: int,
    error_type: str | None,
    body: dict[str, Any],
) -> None:
    """Make the real client receive this HTTP answer to one EKS operation (AWS's wire format)."""
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type

    def send(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, status, headers, _Body(json.dumps(body).encode()))

    cloud._eks(spec).meta.events.register(f"before-send.eks.{operation}", send)


def test_permission_denied_names_the_action(eks: Any) -> None:
    cloud, spec = spec_for()
    answer(
        cloud,
        spec,
        "CreateNodegroup",
        403,
        "AccessDeniedException",
        {
            "message": "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: "
            "eks:CreateNodegroup on resource: arn:aws:eks:us-east-1:123456789012:cluster/llm-aws"
        },
    )
    with pytest.raises(LlmctlError, match="may not call eks:CreateNodegroup"):
        cloud.ensure_gpu_pool(spec)


def test_permission_denied_for_pass_role(eks: Any) -> None:
    cloud, spec = spec_for()
    answer(
        cloud,
        spec,
        "CreateNodegroup",
        403,
        "AccessDeniedException",
        {
            "message": "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: "
            "iam:PassRole on resource: arn:aws:iam::123456789012:role/eks-node"
        },
    )
    with pytest.raises(LlmctlError, match="may not call iam:PassRole"):
        cloud.ensure_gpu_pool(spec)


def test_quota_exceeded_says_what_to_try(eks: Any) -> None:
    cloud, spec = spec_for()
    answer(
        cloud,
        spec,
        "CreateNodegroup",
        400,
        "ResourceLimitExceededException",
        {"message": "Nodegroups per cluster quota exceeded", "clusterName": CLUSTER},
    )
    with pytest.raises(LlmctlError, match="quota exceeded") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--on-demand" in (info.value.hint or "") and "--instance-type" in (info.value.hint or "")


def test_no_spot_capacity_fails_the_waiter_with_advice(eks: Any) -> None:
    cloud, spec = spec_for()
    failed = {
        "nodegroup": {
            "nodegroupName": "gpu-t4",
            "clusterName": CLUSTER,
            "status": "CREATE_FAILED",
            "capacityType": "SPOT",
            "instanceTypes": ["g4dn.xlarge"],
            "scalingConfig": {"minSize": 0, "maxSize": 2, "desiredSize": 0},
            "health": {
                "issues": [
                    {
                        "code": "AsgInstanceLaunchFailures",
                        "message": "Could not launch Spot Instances. InsufficientInstanceCapacity "
                        "- There is no Spot capacity available that matches your request.",
                        "resourceIds": ["eks-gpu-t4"],
                    }
                ]
            },
        }
    }
    answer(cloud, spec, "DescribeNodegroup", 200, None, failed)
    # The first describe (does the pool exist?) must say "no": moto answers that one.
    cloud._eks(spec).meta.events.unregister("before-send.eks.DescribeNodegroup")
    original = cloud.create_pool

    def create_then_fail(s: PoolSpec, progress: Any) -> None:
        answer(cloud, s, "DescribeNodegroup", 200, None, failed)
        original(s, progress)

    cloud.create_pool = create_then_fail  # type: ignore[method-assign]
    with pytest.raises(LlmctlError, match="CREATE_FAILED.*no Spot capacity") as info:
        cloud.ensure_gpu_pool(spec)
    assert "--on-demand" in (info.value.hint or "")


def test_moto_accepts_what_aws_rejects_so_llmctl_checks_first() -> None:
    with pytest.raises(ConfigError, match="above the maximum"):
        spec_for(min_nodes=3, max_nodes=2)
    with pytest.raises(ConfigError, match="not a aws GPU instance type"):
        spec_for(instance_type="t3.small")
    with pytest.raises(ConfigError, match="--preemptible is not supported on AWS EKS"):
        spec_for(preemptible=True)
    with pytest.raises(ConfigError, match="--node-role 'role-name' is not an IAM role ARN"):
        spec_for(node_role="role-name")


def test_dry_run_request_is_pure() -> None:
    _, spec = spec_for()
    params = create_nodegroup_params(spec)
    assert params["subnets"] == ["<copied from the cluster's existing node group at run time>"]
    assert params["capacityType"] == "SPOT"
