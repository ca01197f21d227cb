"""The EKS adapter against moto (create, re-run, update, status, disable, waiters) and the
error paths through botocore's own parsing of the error bodies AWS sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from moto import mock_aws

from llmctl.clouds.aws import AwsCloud, create_nodegroup_params, update_nodegroup_params
from llmctl.clouds.base import PoolDiffersError, PoolOptions, PoolSpec
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from tests.support.fake_eks import (
    EksUpdates,
    answer,
    eks_cluster,
    strict_launch_templates,
    wire,
)
from tests.support.fake_service_quotas import ec2_quotas

REGION = "us-east-1"
CLUSTER = "llm-aws"
ROLE = "arn:aws:iam::123456789012:role/eks-node"


@pytest.fixture
def eks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    ec2_quotas(monkeypatch)
    strict_launch_templates(monkeypatch)
    with mock_aws():
        yield eks_cluster(CLUSTER, REGION, ("subnet-a", "subnet-b"), ROLE)


def spec_for(**options: Any) -> tuple[AwsCloud, PoolSpec]:
    cloud = AwsCloud(poll_delay=0, max_attempts=5)
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
        "k8s.amazonaws.com/accelerator": "nvidia-tesla-t4",  # cluster-autoscaler's GPU label
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
        f"{prefix}/label/k8s.amazonaws.com/accelerator": "nvidia-tesla-t4",
        f"{prefix}/taint/nvidia.com/gpu": "present:NoSchedule",
        "llmctl-managed-by": "llmctl",  # llmctl's mark: disable acts only on marked pools
    }
    # The root disk: 80 GiB, not EKS's 20 GiB default (review N7); with the local disk (issue
    # 30) in the launch template, since EKS refuses diskSize beside one.
    assert group["launchTemplate"]["name"] == "llmctl-llm-aws-gpu-t4"
    assert {"diskSize"} & set(create_nodegroup_params(spec)) == set()


def test_without_local_disk_the_root_disk_is_disk_size(eks: Any) -> None:
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(replace(spec, local_disk=False))
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["diskSize"] == 80  # not EKS's 20 GiB default (review N7)
    assert "launchTemplate" not in group


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


def test_no_node_group_to_copy_from() -> None:
    with mock_aws():
        eks_cluster("bare", REGION, node_role=None)
        cloud, spec = spec_for(cluster="bare")
        with pytest.raises(LlmctlError, match="no node group to copy") as info:
            cloud.ensure_gpu_pool(spec)
        assert "--subnet" in (info.value.hint or "")


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
    answer(cloud._eks(spec), "DescribeNodegroup", 200, failed)
    # The first describe (does the pool exist?) must say "no": moto answers that one.
    cloud._eks(spec).meta.events.unregister("before-send.eks.DescribeNodegroup")
    original = cloud.create_pool

    def create_then_fail(s: PoolSpec, progress: Any) -> None:
        answer(cloud._eks(s), "DescribeNodegroup", 200, failed)
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


def _updates(cloud: AwsCloud, spec: PoolSpec) -> tuple[EksUpdates, list[dict[str, Any]]]:
    """The DescribeUpdate stand-in on the cloud's client, and the UpdateNodegroupConfig params."""
    sent: list[dict[str, Any]] = []
    client = cloud._eks(spec)
    client.meta.events.register(
        "before-parameter-build.eks.UpdateNodegroupConfig",
        lambda params, **_: sent.append(dict(params)),
    )
    return EksUpdates().attach(client), sent


def test_update_is_followed_to_its_end_by_describe_update(eks: Any) -> None:
    """Review item 6: the update id is followed (InProgress, then Successful)."""
    cloud, spec = spec_for()
    updates, sent = _updates(cloud, spec)
    cloud.ensure_gpu_pool(spec)
    _, bigger = spec_for(max_nodes=3)
    seen: list[str] = []
    assert cloud.ensure_gpu_pool(bigger, seen.append).action == "updated"
    assert updates.described == list(updates.updates)  # every update id was asked about
    assert "update InProgress" in seen and "update Successful" in seen
    # desiredSize 0 lies inside [0, 3]: not sent (AWS: don't fight cluster-autoscaler over it).
    assert sent[-1]["scalingConfig"] == {"minSize": 0, "maxSize": 3}


def test_failed_update_is_an_error_not_updated(eks: Any) -> None:
    cloud, spec = spec_for()
    updates, _ = _updates(cloud, spec)
    cloud.ensure_gpu_pool(spec)
    updates.script.append(["InProgress", "Failed"])
    updates.errors.append(
        {
            "errorCode": "NodeCreationFailure",
            "errorMessage": "Instances failed to join the kubernetes cluster",
            "resourceIds": ["i-0123"],
        }
    )
    _, bigger = spec_for(max_nodes=3)
    with pytest.raises(LlmctlError, match="failed: NodeCreationFailure") as info:
        cloud.ensure_gpu_pool(bigger)
    assert "aws eks describe-update" in (info.value.hint or "")


def test_desired_size_is_sent_only_outside_the_new_range() -> None:
    _, spec = spec_for(min_nodes=1, max_nodes=3)
    from llmctl.clouds.base import PoolState

    def state(current: int) -> PoolState:
        return PoolState("gpu-t4", "g4dn.xlarge", "spot", 0, current, 2, "ACTIVE", spec.labels)

    assert update_nodegroup_params(spec, state(2))["scalingConfig"] == {"minSize": 1, "maxSize": 3}
    assert update_nodegroup_params(spec, state(0))["scalingConfig"]["desiredSize"] == 1


def test_stand_in_refuses_desired_outside_range(eks: Any) -> None:
    cloud, spec = spec_for()
    _updates(cloud, spec)
    cloud.ensure_gpu_pool(spec)
    with pytest.raises(Exception, match="InvalidParameterException"):
        cloud._eks(spec).update_nodegroup_config(
            clusterName=CLUSTER,
            nodegroupName="gpu-t4",
            scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 2},
        )


def test_degraded_group_ends_the_wait_at_once(eks: Any) -> None:
    """Review item 6: botocore's waiter would poll a DEGRADED group for 30 minutes."""
    cloud, spec = spec_for()
    cloud.max_attempts = 1000
    cloud.ensure_gpu_pool(spec)
    degraded = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    degraded = json.loads(json.dumps(degraded, default=str))
    degraded["status"] = "DEGRADED"
    degraded["health"] = {
        "issues": [{"code": "AsgInstanceLaunchFailures", "message": "InsufficientInstanceCapacity"}]
    }
    answer(cloud._eks(spec), "DescribeNodegroup", 200, {"nodegroup": degraded})
    calls: list[str] = []
    cloud._eks(spec).meta.events.register(
        "before-send.eks.DescribeNodegroup", lambda **_: calls.append("x")
    )
    with pytest.raises(LlmctlError, match="status DEGRADED") as info:
        cloud.wait_until_ready(spec, lambda _: None)
    assert len(calls) == 1
    assert "--on-demand" in (info.value.hint or "")


def test_labels_and_taints_are_updated_in_place(eks: Any) -> None:
    """Review item 7: UpdateNodegroupConfig adds labels/taints; no delete and recreate."""
    cloud, spec = spec_for()
    updates, sent = _updates(cloud, spec)
    cloud.ensure_gpu_pool(spec)
    eks.update_nodegroup_config(
        clusterName=CLUSTER,
        nodegroupName="gpu-t4",
        labels={"removeLabels": ["k8s.amazonaws.com/accelerator"], "addOrUpdateLabels": {"a": "b"}},
        taints={"removeTaints": [{"key": "nvidia.com/gpu", "effect": "NO_SCHEDULE"}]},
    )
    result = cloud.ensure_gpu_pool(spec)
    assert result.action == "updated"
    assert {d.field for d in result.differences} == {"labels", "taints"}
    assert sent[-1]["labels"] == {
        "addOrUpdateLabels": {"k8s.amazonaws.com/accelerator": "nvidia-tesla-t4"}
    }
    assert "scalingConfig" not in sent[-1]
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    assert group["labels"]["a"] == "b"  # kept
    assert group["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
    ]


def test_old_ami_type_is_reported(eks: Any) -> None:
    """Review item 7: an AL2 GPU group with llmctl's name is not "unchanged"."""
    cloud, spec = spec_for()
    params = create_nodegroup_params(replace(spec, local_disk=False), ["subnet-a"], ROLE)
    params["amiType"] = "AL2_x86_64_GPU"
    eks.create_nodegroup(**params)
    with pytest.raises(PoolDiffersError, match="AMI type: wants AL2023_x86_64_NVIDIA"):
        cloud.ensure_gpu_pool(spec)


def test_every_request_passes_botocore_validation() -> None:
    """The EKS stand-in's strictness: botocore's own ParamValidator on the service model, which
    the real client runs before moto (or AWS) sees anything."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("eks")
    _, spec = spec_for()
    create = create_nodegroup_params(spec, ["subnet-a"], ROLE)
    report = ParamValidator().validate(create, model.operation_model("CreateNodegroup").input_shape)
    assert not report.has_errors(), report.generate_report()
    update_shape = model.operation_model("UpdateNodegroupConfig").input_shape
    from llmctl.clouds.base import PoolState

    old = PoolState("gpu-t4", "g4dn.xlarge", "spot", 0, 0, 1, "ACTIVE")
    update = update_nodegroup_params(spec, old)
    assert not ParamValidator().validate(update, update_shape).has_errors()
    zero = {**update, "scalingConfig": {"minSize": 0, "maxSize": 0, "desiredSize": 0}}
    assert "maxSize" in ParamValidator().validate(zero, update_shape).generate_report()


@pytest.mark.usefixtures("clean_cloud_env")
def test_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review item 5: ProfileNotFound was a traceback (raised while building the client)."""
    monkeypatch.setenv("AWS_PROFILE", "nope")
    cloud, spec = spec_for()
    with pytest.raises(ConfigError, match="AWS profile not found") as info:
        cloud.read_pool(spec)
    assert "aws configure list-profiles" in (info.value.hint or "")


@pytest.mark.usefixtures("clean_cloud_env")
def test_sso_not_logged_in_says_aws_sso_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    config = tmp_path / "sso-config"
    config.write_text(
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\n"
        "sso_role_name = Admin\nregion = us-east-1\n"
        "[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n"
        "sso_region = us-east-1\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "dev")
    cloud, spec = spec_for()
    with pytest.raises(LlmctlError, match="SSO session is missing or expired") as info:
        cloud.read_pool(spec)
    assert "aws sso login" in (info.value.hint or "")


@pytest.mark.parametrize("region", ["bad region!", "", "US-EAST-1"])
def test_malformed_region_is_a_config_error(region: str) -> None:
    """Review items 5 and 15: InvalidRegionError was a traceback; '' was silently ignored."""
    with pytest.raises(ConfigError, match="not an AWS region name|is empty"):
        spec_for(location=region)


def _degraded(cloud: AwsCloud, spec: PoolSpec, eks: Any, code: str, message: str) -> None:
    group = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="gpu-t4")["nodegroup"]
    group = json.loads(json.dumps(group, default=str))
    group["status"] = "DEGRADED"
    group["health"] = {"issues": [{"code": code, "message": message}]}
    answer(cloud._eks(spec), "DescribeNodegroup", 200, {"nodegroup": group})


def test_degraded_for_quota_names_the_quota(eks: Any) -> None:
    """Review N1 (c): a zero Spot quota, as EKS reports it once the autoscaler scales up
    (aws-deepracer-community/deepracer-on-the-spot#55), gets the quota, not "delete the pool,
    another region or G type", which share the same quota."""
    cloud, spec = spec_for()
    cloud.ensure_gpu_pool(spec)
    _degraded(
        cloud,
        spec,
        eks,
        "AsgInstanceLaunchFailures",
        "Could not launch Spot Instances. MaxSpotInstanceCountExceeded - Max spot instance "
        "count exceeded. Launching EC2 instance failed.",
    )
    with pytest.raises(LlmctlError, match="DEGRADED: AsgInstanceLaunchFailures") as info:
        cloud.ensure_gpu_pool(spec)
    hint = info.value.hint or ""
    assert "All G and VT Spot Instance Requests" in hint and "--quota-code L-3819A6DF" in hint
    assert "disable" not in hint and "--on-demand" not in hint
    with pytest.raises(LlmctlError) as waited:
        cloud.wait_until_ready(spec, lambda _: None)
    assert "L-3819A6DF" in (waited.value.hint or "")


def test_throttling_says_wait_and_rerun(eks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review N9: after botocore's retries, a throttled call said only "Rate exceeded"."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries are not what is tested
    cloud, spec = spec_for()
    client = cloud._eks(spec)
    answer(client, "DescribeNodegroup", 400, {"message": "Rate exceeded"}, "ThrottlingException")
    with pytest.raises(LlmctlError, match="throttled \\(ThrottlingException\\)") as info:
        cloud.read_pool(spec)
    assert "wait a minute" in (info.value.hint or "")


def test_service_quotas_denied_is_not_read_and_stops_nothing(eks: Any) -> None:
    cloud, spec = spec_for()
    quotas = cloud._quotas(spec)
    quotas.meta.events.register(
        "before-send.service-quotas.GetServiceQuota",
        lambda request, **_: wire(
            request,
            400,
            {"Message": "User is not authorized to perform: servicequotas:GetServiceQuota"},
            "AccessDeniedException",
        ),
    )
    report = cloud.read_quotas(spec)
    assert report.quotas == ()
    assert "servicequotas:GetServiceQuota" in (report.unread or "")
