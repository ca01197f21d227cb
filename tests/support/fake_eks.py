"""What moto's EKS lacks and llmctl depends on, added to a real boto3 client's event hooks.

moto 5.2 answers UpdateNodegroupConfig with an `update` (id, status Successful) but has no
DescribeUpdate, applies any scaling, and never shows a group UPDATING. Real EKS:

- returns `update {id, status, type, params, errors}` and answers `DescribeUpdate(name,
  nodegroupName, updateId)` with `status` InProgress, then Successful, Failed or Cancelled and
  `errors [{errorCode, errorMessage, resourceIds}]` (botocore `eks/2017-11-01` service model:
  `UpdateStatus`, `ErrorDetail`); botocore has no waiter for updates;
- reports the group `UPDATING` while an update runs (NodegroupStatus in the same model);
- refuses a desiredSize outside [minSize, maxSize] with InvalidParameterException (EKS API
  reference, NodegroupScalingConfig: "desiredSize ... greater than or equal to minSize ... less
  than or equal to maxSize");
- validates every request against the service model on the client side: botocore's
  ParamValidator runs before anything is sent (maxSize >= 1, required members, types), so moto
  only ever sees requests AWS would parse.

- tags managed node groups: TagResource takes a node group's ARN ("Tags can be added to
  clusters, managed node groups, ...": TagResource in the EKS API reference), where moto 5.2 tags
  clusters only (`EKSBackend.tag_resource`: "It does not tag a managed node group").

The hooks answer on the wire (JSON with AWS's error headers), so botocore parses them as it
parses AWS's answers. `updates` scripts what the next updates do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def wire(request: Any, status: int, body: dict[str, Any], error: str | None = None) -> AWSResponse:
    headers = {"Content-Type": "application/json"}
    if error:
        headers["x-amzn-ErrorType"] = error
    return AWSResponse(request.url, status, headers, _Body(json.dumps(body).encode()))


def answer(
    client: Any, operation: str, status: int, body: dict[str, Any], error: str | None = None
) -> None:
    """Make the real boto3 EKS client receive this HTTP answer to `operation` (AWS's wire
    format: botocore parses it as it parses AWS's answers)."""

    def send(request: Any, **_: Any) -> AWSResponse:
        return wire(request, status, body, error)

    client.meta.events.register(f"before-send.eks.{operation}", send)


def eks_cluster(
    name: str = "llm-aws",
    region: str = "us-east-1",
    subnets: tuple[str, ...] = ("subnet-a",),
    node_role: str | None = "arn:aws:iam::123456789012:role/eks-node",
) -> Any:
    """An EKS cluster in moto (inside `mock_aws()`), with a `system` node group to copy subnets
    and the node role from unless `node_role` is None; the boto3 client that made it."""
    import boto3

    client = boto3.client("eks", region_name=region)
    client.create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": list(subnets)},
    )
    if node_role is not None:
        client.create_nodegroup(
            clusterName=name, nodegroupName="system", subnets=list(subnets), nodeRole=node_role
        )
    return client


def tag_node_groups(client: Any) -> None:
    """TagResource on a node group ARN tags moto's node group (see the module docstring)."""
    from urllib.parse import unquote

    from moto.eks.models import eks_backends

    def send(request: Any, **_: Any) -> AWSResponse | None:
        arn = unquote(urlsplit(request.url).path.removeprefix("/tags/"))
        if ":nodegroup/" not in arn:
            return None  # a cluster: moto does that
        region, account = arn.split(":")[3:5]
        cluster, name = arn.split(":nodegroup/")[1].split("/")[:2]
        backend = eks_backends[account][region]
        group = (
            backend.clusters[cluster].nodegroups.get(name) if cluster in backend.clusters else None
        )
        if group is None:
            return wire(
                request, 404, {"message": "Resource was not found"}, "ResourceNotFoundException"
            )
        group.tags.update(json.loads(request.body or b"{}").get("tags", {}))
        return wire(request, 200, {})

    client.meta.events.register("before-send.eks.TagResource", send)


@dataclass
class EksUpdates:
    # The status sequence DescribeUpdate walks through for each next update (default: one
    # InProgress answer, then Successful).
    script: list[list[str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    described: list[str] = field(default_factory=list)

    def attach(self, client: Any) -> EksUpdates:
        events = client.meta.events
        events.register("before-send.eks.UpdateNodegroupConfig", self._check_update)
        events.register("after-call.eks.UpdateNodegroupConfig", self._record)
        events.register("before-send.eks.DescribeUpdate", self._describe)
        events.register("after-call.eks.DescribeNodegroup", self._updating)
        return self

    def _check_update(self, request: Any, **_: Any) -> AWSResponse | None:
        scaling = json.loads(request.body or b"{}").get("scalingConfig") or {}
        low, high, want = (scaling.get(k) for k in ("minSize", "maxSize", "desiredSize"))
        if want is not None and low is not None and high is not None and not low <= want <= high:
            return wire(
                request,
                400,
                {
                    "message": "desired capacity must be greater than or equal to min size and "
                    "less than or equal to max size"
                },
                "InvalidParameterException",
            )
        return None

    def _record(self, parsed: dict[str, Any], model: Any, params: Any = None, **_: Any) -> None:
        update = parsed.get("update")
        if update is None:  # refused: no update was started
            return
        steps = self.script.pop(0) if self.script else ["InProgress", "Successful"]
        update["status"] = steps[0]
        self.updates[update["id"]] = {
            "update": dict(update),
            "steps": steps[1:],
            "group": (params or {}).get("nodegroupName"),
        }

    def _describe(self, request: Any, **_: Any) -> AWSResponse:
        update_id = urlsplit(request.url).path.rstrip("/").split("/")[-1]
        self.described.append(update_id)
        known = self.updates.get(update_id)
        if known is None:
            return wire(
                request,
                404,
                {"message": f"No update found for ID: {update_id}"},
                "ResourceNotFoundException",
            )
        update = known["update"]
        if known["steps"]:
            update["status"] = known["steps"].pop(0)
            if update["status"] == "Failed":
                update["errors"] = self.errors
        body = dict(update)
        body["createdAt"] = 1767225600
        return wire(request, 200, {"update": body})

    def _updating(self, parsed: dict[str, Any], **_: Any) -> None:
        group = parsed.get("nodegroup", {})
        running = any(
            u["group"] == group.get("nodegroupName") and u["update"]["status"] == "InProgress"
            for u in self.updates.values()
        )
        if running and group.get("status") == "ACTIVE":
            group["status"] = "UPDATING"


# ---- launch templates on managed node groups (issue 30) ----------------------------------------
#
# moto 5.2's CreateNodegroup refuses `diskSize` (and `remoteAccess`) beside `launchTemplate`, as
# EKS does ("If you specify launchTemplate, then don't specify diskSize, or the node group
# deployment will fail": CreateNodegroup.diskSize in the EKS API reference), but it accepts a
# template that does not exist (its lookup sits in a bare `except`) and never reads what the
# template holds. EKS does (EKS user guide, "Customize managed nodes with launch templates"):
# - the template and the version asked for must exist;
# - a template must not name an IAM instance profile or a network interface's subnet (the node
#   group's nodeRole and subnets are used), nor an instance type when the node group names
#   instanceTypes (the guide's table of prohibited settings: "Don't specify both places");
# - its user data "must be in the MIME multi-part archive format" for Amazon Linux AMIs, else
#   Ec2LaunchTemplateInvalidConfiguration "User data was not in the MIME multipart format."
#   (aws-ia/terraform-aws-eks-blueprints#843, terraform-aws-modules/terraform-aws-eks#2059).
# And what nodeadm would refuse at boot, so that the node would never join: a NodeConfig part
# (content type application/node.eks.aws) that is not apiVersion node.eks.aws/v1alpha1, kind
# NodeConfig, or whose spec.instance.localStorage.strategy is outside the API's enum RAID0,
# RAID10, Mount (awslabs/amazon-eks-ami nodeadm/api/v1alpha1/nodeconfig_types.go).
# The refusals are InvalidParameterException with the stand-in's own wording, where EKS's exact
# text was not found (the user-data one is EKS's).

NODEADM_STRATEGIES = frozenset({"RAID0", "RAID10", "Mount"})
NODEADM_PART = "application/node.eks.aws"


def launch_template_refusal(account: str, region: str, params: dict[str, Any]) -> str | None:
    """Why EKS would refuse CreateNodegroup's launchTemplate (see above), or None."""
    from moto.ec2.models import ec2_backends

    spec = params.get("launch_template")
    if not spec:
        return None
    ec2 = ec2_backends[account][region]
    name, template_id = spec.get("name"), spec.get("id")
    try:
        template = (
            ec2.get_launch_template_by_name(name)
            if name
            else ec2.get_launch_template(str(template_id))
        )
    except Exception:  # moto's InvalidLaunchTemplate*NotFound
        return f"Launch template {name or template_id} does not exist."
    try:
        version = template.get_version(spec.get("version") or "$Default")
    except Exception:  # InvalidLaunchTemplateVersionNotFound
        return f"Launch template {template.name} has no version {spec.get('version')}."
    data = version.data
    if data.get("IamInstanceProfile"):
        return "IamInstanceProfile is not allowed in a launch template used by a node group."
    if any(n.get("SubnetId") for n in data.get("NetworkInterfaces") or []):
        return "SubnetId in a network interface is not allowed in a launch template."
    if data.get("InstanceType") and params.get("instance_types"):
        return (
            "Instance types must be specified in the launch template or the node group, not both."
        )
    return _user_data_refusal(data.get("UserData"))


def _user_data_refusal(encoded: Any) -> str | None:
    import base64
    import email

    import yaml

    if encoded is None:
        return None
    text = base64.b64decode(str(getattr(encoded, "_encoded_string", encoded))).decode()
    message = email.message_from_string(text)
    if not message.is_multipart():
        return (
            "Ec2LaunchTemplateInvalidConfiguration: User data was not in the MIME multipart format."
        )
    for part in message.walk():
        if part.get_content_type() != NODEADM_PART:
            continue
        config = yaml.safe_load(str(part.get_payload())) or {}
        kind = (config.get("apiVersion"), config.get("kind"))
        if kind != ("node.eks.aws/v1alpha1", "NodeConfig"):
            return f"nodeadm: the {NODEADM_PART} part is not a node.eks.aws/v1alpha1 NodeConfig."
        storage = ((config.get("spec") or {}).get("instance") or {}).get("localStorage") or {}
        strategy = storage.get("strategy")
        if strategy is not None and strategy not in NODEADM_STRATEGIES:
            return (
                f"nodeadm: localStorage.strategy {strategy!r} is not one of RAID0, RAID10, Mount."
            )
    return None


def strict_launch_templates(monkeypatch: Any) -> None:
    """moto's CreateNodegroup, with EKS's launch template rules (see above) checked first."""
    from moto.eks.exceptions import InvalidParameterException
    from moto.eks.models import EKSBackend

    original = EKSBackend.create_nodegroup

    def create_nodegroup(self: Any, *args: Any, **params: Any) -> Any:
        problem = launch_template_refusal(self.account_id, self.region_name, params)
        if problem:
            raise InvalidParameterException(
                clusterName=params.get("cluster_name"),
                nodegroupName=params.get("nodegroup_name"),
                fargateProfileName=None,
                addonName=None,
                message=problem,
            )
        return original(self, *args, **params)

    monkeypatch.setattr(EKSBackend, "create_nodegroup", create_nodegroup)
