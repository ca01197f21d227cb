"""Issue 30: the GPU pool's local disk, on each cloud against its stand-in. A new pool gets it
(EKS: a launch template whose nodeadm NodeConfig makes the NVMe instance store one RAID0 array
for the kubelet; GKE: Local SSD backing ephemeral storage; AKS: an ephemeral OS disk on the VM's
temp disk); a pool without it is reported, not changed and not refused (no cloud can add it in
place); the stand-ins refuse what the clouds refuse on the fields llmctl now sends."""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import yaml

from llmctl.catalog import CloudName
from llmctl.clouds import aws
from llmctl.clouds.base import PoolOptions
from llmctl.config import Stack, load_stack
from llmctl.errors import LlmctlError
from tests.clouds.harness import HARNESSES, Harness

TEMPLATE = "llmctl-llm-aws-gpu-t4"


def _harness(cloud: CloudName) -> Iterator[Harness]:
    yield from HARNESSES[cloud]()


@pytest.fixture
def eks() -> Iterator[Harness]:
    yield from _harness(CloudName.AWS)


@pytest.fixture
def gke() -> Iterator[Harness]:
    yield from _harness(CloudName.GCP)


@pytest.fixture
def aks() -> Iterator[Harness]:
    yield from _harness(CloudName.AZURE)


@pytest.fixture(params=list(HARNESSES), ids=lambda c: c.value)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from HARNESSES[request.param]()


# ---- every cloud --------------------------------------------------------------------------------


def test_the_gpu_tiers_default_asks_for_local_disk_and_ephemeral_does_not() -> None:
    assert (Stack().gpu.model_volume, Stack().cpu.model_volume) == ("local", "ephemeral")
    assert aws.AwsCloud().node_pool_spec(Stack(), PoolOptions()).local_disk
    network = Stack.model_validate({"gpu": {"model": {**_gpu_model(), "volume": "ephemeral"}}})
    assert not aws.AwsCloud().node_pool_spec(network, PoolOptions()).local_disk


def _gpu_model() -> dict[str, Any]:
    return Stack().gpu.model.model_dump(by_alias=True, exclude_none=True)


def test_a_new_pool_has_local_disk(harness: Harness) -> None:
    result = harness.cloud.ensure_gpu_pool(harness.spec())
    assert result.action == "created"
    assert result.state is not None and result.state.local_disk
    assert result.state.as_dict()["localDisk"] is True
    # And a second run finds nothing to change or report.
    again = harness.cloud.ensure_gpu_pool(harness.spec())
    assert (again.action, again.notes) == ("unchanged", ())


def test_a_pool_without_local_disk_is_reported_not_refused_or_changed(harness: Harness) -> None:
    """A pool made before llmctl asked for local disk (or by `--adopt`): no cloud adds it in
    place, and the pool works without it, so enable goes on and says what it lacks."""
    plain = replace(harness.spec(), local_disk=False)
    harness.cloud.ensure_gpu_pool(plain)
    before = harness.writes()
    plan = harness.cloud.current_plan(harness.spec())
    assert plan.action == "unchanged"
    assert [n.field for n in plan.notes] == ["local disk"]
    assert "llmctl gpu disable" in plan.notes[0].why
    assert harness.cloud.ensure_gpu_pool(harness.spec()).action == "unchanged"
    assert harness.writes() == before
    # A change the cloud can make in place is still made, with the note beside it.
    bigger = harness.cloud.ensure_gpu_pool(harness.spec(max_nodes=3))
    assert bigger.action == "updated"
    assert [n.field for n in bigger.notes] == ["local disk"]
    assert harness.stored_max() == 3


def test_ephemeral_model_volume_asks_for_no_local_disk(harness: Harness) -> None:
    plain = replace(harness.spec(), local_disk=False)
    result = harness.cloud.ensure_gpu_pool(plain)
    assert result.state is not None and not result.state.local_disk
    assert harness.cloud.current_plan(plain).notes == ()


# ---- EKS ---------------------------------------------------------------------------------------


def _ec2() -> Any:
    import boto3

    return boto3.client("ec2", region_name="us-east-1")


def _template_data(version: str = "$Latest") -> dict[str, Any]:
    versions = _ec2().describe_launch_template_versions(
        LaunchTemplateName=TEMPLATE, Versions=[version]
    )["LaunchTemplateVersions"]
    data: dict[str, Any] = versions[0]["LaunchTemplateData"]
    return data


def _node_config(data: dict[str, Any]) -> dict[str, Any]:
    message = email.message_from_bytes(base64.b64decode(data["UserData"]))
    assert message.is_multipart()
    parts = [p for p in message.walk() if p.get_content_type() == "application/node.eks.aws"]
    assert len(parts) == 1
    config: dict[str, Any] = yaml.safe_load(str(parts[0].get_payload()))
    return config


def test_eks_group_uses_a_launch_template_that_raids_the_instance_store(eks: Harness) -> None:
    eks.cloud.ensure_gpu_pool(eks.spec())
    group = eks.fake.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")["nodegroup"]
    assert group["launchTemplate"]["name"] == TEMPLATE
    data = _template_data(group["launchTemplate"]["version"])
    config = _node_config(data)
    assert (config["apiVersion"], config["kind"]) == ("node.eks.aws/v1alpha1", "NodeConfig")
    assert config["spec"]["instance"]["localStorage"]["strategy"] == "RAID0"
    # diskSize cannot go beside a launch template: the template carries the 80 GiB root volume.
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"VolumeSize": 80, "VolumeType": "gp3", "DeleteOnTermination": True},
        }
    ]
    tags = _ec2().describe_launch_templates(LaunchTemplateNames=[TEMPLATE])["LaunchTemplates"]
    assert {t["Key"]: t["Value"] for t in tags[0]["Tags"]} == {"llmctl-managed-by": "llmctl"}


def test_eks_create_params_pass_botocore_validation_without_disk_size() -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    spec = aws.AwsCloud().node_pool_spec(Stack(), PoolOptions())
    session = botocore.session.get_session()
    create = aws.create_nodegroup_params(spec, ["subnet-a"], "arn:aws:iam::1:role/x", "1")
    assert "diskSize" not in create
    assert create["launchTemplate"] == {"name": TEMPLATE, "version": "1"}
    eks_shape = session.get_service_model("eks").operation_model("CreateNodegroup").input_shape
    assert not ParamValidator().validate(create, eks_shape).has_errors()
    ec2_shape = session.get_service_model("ec2").operation_model("CreateLaunchTemplate")
    template = aws.create_launch_template_params(spec)
    report = ParamValidator().validate(template, ec2_shape.input_shape)
    assert not report.has_errors(), report.generate_report()
    # --dry-run shows both requests, the template first.
    targets = [r.target for r in aws.AwsCloud().create_requests(spec)]
    assert targets[0].startswith("ec2:CreateLaunchTemplate")
    assert targets[1].startswith("eks:CreateNodegroup")
    plain = replace(spec, local_disk=False)
    assert aws.create_nodegroup_params(plain)["diskSize"] == 80
    assert len(aws.AwsCloud().create_requests(plain)) == 1


def test_eks_rerun_reuses_the_template_and_repairs_an_edited_one(eks: Harness) -> None:
    spec = eks.spec()
    assert eks.cloud.ensure_launch_template(spec) == "1"  # left by a create that failed later
    assert eks.cloud.ensure_launch_template(spec) == "1"  # same data: reused
    _ec2().create_launch_template_version(
        LaunchTemplateName=TEMPLATE,
        LaunchTemplateData={"UserData": base64.b64encode(b"#!/bin/sh\ntrue\n").decode()},
    )
    assert eks.cloud.ensure_launch_template(spec) == "3"  # someone's edit: a new version of ours
    assert _node_config(_template_data("3"))["spec"]["instance"]["localStorage"] == {
        "strategy": "RAID0"
    }
    assert eks.cloud.ensure_gpu_pool(spec).action == "created"


def test_eks_disable_deletes_the_template_it_made_only(eks: Harness) -> None:
    spec = eks.spec()
    eks.cloud.ensure_gpu_pool(spec)
    assert eks.cloud.disable(spec, scale_to_zero=False)
    assert _ec2().describe_launch_templates()["LaunchTemplates"] == []
    # Someone else's template of that name (no llmctl mark) stays.
    _ec2().create_launch_template(LaunchTemplateName=TEMPLATE, LaunchTemplateData={})
    eks.cloud.delete_launch_template(spec)
    assert len(_ec2().describe_launch_templates()["LaunchTemplates"]) == 1


def _create(eks: Harness, **params: Any) -> None:
    eks.fake.create_nodegroup(
        clusterName="llm-aws",
        nodegroupName="probe",
        subnets=["subnet-a"],
        nodeRole="arn:aws:iam::123456789012:role/eks-node",
        **params,
    )


def _template(name: str, **data: Any) -> None:
    _ec2().create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data)


def _user_data(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_eks_stand_in_refuses_what_eks_refuses_in_a_launch_template(eks: Harness) -> None:
    refused = eks.fake.exceptions.InvalidParameterException
    good = aws.launch_template_data()
    _template("good", **good)
    with pytest.raises(refused, match="Disk size must be specified within the launch template"):
        _create(eks, launchTemplate={"name": "good"}, diskSize=80)
    with pytest.raises(refused, match="does not exist"):
        _create(eks, launchTemplate={"name": "missing"})
    with pytest.raises(refused, match="has no version 7"):
        _create(eks, launchTemplate={"name": "good", "version": "7"})
    _template("script", UserData=_user_data("#!/bin/bash\n/etc/eks/bootstrap.sh x\n"))
    with pytest.raises(refused, match="User data was not in the MIME multipart format"):
        _create(eks, launchTemplate={"name": "script"})
    _template("profile", **good, IamInstanceProfile={"Name": "nodes"})
    with pytest.raises(refused, match="IamInstanceProfile"):
        _create(eks, launchTemplate={"name": "profile"})
    _template("typed", **good, InstanceType="g4dn.xlarge")
    with pytest.raises(refused, match="not both"):
        _create(eks, launchTemplate={"name": "typed"}, instanceTypes=["g4dn.xlarge"])
    bad = aws.node_user_data().replace("RAID0", "RAID5")
    _template("raid5", UserData=_user_data(bad))
    with pytest.raises(refused, match="RAID5"):
        _create(eks, launchTemplate={"name": "raid5"})
    _create(eks, launchTemplate={"name": "good"}, instanceTypes=["g4dn.xlarge"])  # accepted


# ---- GKE ---------------------------------------------------------------------------------------


def test_gke_pool_backs_ephemeral_storage_with_one_local_ssd(gke: Harness) -> None:
    gke.cloud.ensure_gpu_pool(gke.spec())
    config = gke.fake.pools["gpu-t4"]["config"]
    assert config["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": 1}
    assert gke.fake.local_ssd_gb("gpu-t4") == 375


def test_gke_stand_in_refuses_local_ssd_counts_the_machine_cannot_take(gke: Harness) -> None:
    from google.api_core.exceptions import BadRequest
    from google.cloud import container_v1

    body = json.loads(json.dumps({"name": "probe", "config": {"machineType": "e2-standard-2"}}))
    parent = "projects/proj/locations/us-central1/clusters/llm-gcp"
    client = gke.cloud._gke()  # type: ignore[attr-defined]
    for machine, count, words in (
        ("e2-standard-2", 1, "does not support Local SSD"),
        ("n1-standard-4", 9, "Invalid number of Local SSDs 9"),
    ):
        body["config"] = {
            "machineType": machine,
            "ephemeralStorageLocalSsdConfig": {"localSsdCount": count},
        }
        pool = container_v1.NodePool.from_json(json.dumps(body))
        with pytest.raises(BadRequest, match=words):
            client.create_node_pool(parent=parent, node_pool=pool)
    assert "probe" not in gke.fake.pools


# ---- AKS ---------------------------------------------------------------------------------------


def test_aks_pool_has_an_ephemeral_os_disk_that_fits_the_temp_disk(aks: Harness) -> None:
    aks.cloud.ensure_gpu_pool(aks.spec())
    props = aks.fake.pools["gput4"]["properties"]
    assert (props["osDiskType"], props["osDiskSizeGB"]) == ("Ephemeral", 128)
    assert props["kubeletDiskType"] == "OS"  # on the ephemeral OS disk, so on the temp disk


def test_aks_stand_in_refuses_an_ephemeral_os_disk_above_the_temp_disk(aks: Harness) -> None:
    from azure.mgmt.containerservice.models import AgentPool

    spec = aks.spec()
    client = aks.cloud._aks(spec)  # type: ignore[attr-defined]
    body = {
        "properties": {
            "vmSize": "Standard_NC4as_T4_v3",
            "mode": "User",
            "osType": "Linux",
            "count": 0,
            "osDiskType": "Ephemeral",
            "osDiskSizeGB": 180,  # the documented temp disk: more than AKS counts there
        }
    }
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError, match="VMCacheSizeTooSmall"):
        client.agent_pools.begin_create_or_update(
            "llm-rg", "llm-azure", "probe", AgentPool(body)
        ).result()


def test_aks_stand_in_refuses_changing_the_os_disk_in_place(aks: Harness) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.containerservice.models import AgentPool

    spec = replace(aks.spec(), local_disk=False)
    aks.cloud.ensure_gpu_pool(spec)
    client = aks.cloud._aks(spec)  # type: ignore[attr-defined]
    current = dict(client.agent_pools.get("llm-rg", "llm-azure", "gput4").as_dict())
    current["properties"]["osDiskType"] = "Ephemeral"
    with pytest.raises(HttpResponseError, match="osDiskType"):
        client.agent_pools.begin_create_or_update(
            "llm-rg", "llm-azure", "gput4", AgentPool(current)
        ).result()


def test_llmctl_yaml_can_turn_the_gpu_tier_to_network_disks(tmp_path: Any) -> None:
    path = tmp_path / "llmctl.yaml"
    path.write_text(
        "gpu:\n  model:\n"
        + "".join(
            f"    {k}: {json.dumps(v)}\n"
            for k, v in {**_gpu_model(), "volume": "ephemeral"}.items()
        )
    )
    assert load_stack(path, env={}).stack.gpu.model_volume == "ephemeral"
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("ephemeral", "nvme"))
    with pytest.raises(LlmctlError, match="volume"):
        load_stack(bad, env={})


def test_docs_show_the_user_data_llmctl_sends() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "gpu.md").read_text()
    assert f"```\n{aws.node_user_data()}```" in page
