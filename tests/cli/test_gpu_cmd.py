"""`llmctl gpu` end to end: the real CLI, real SDK clients, moto / local GKE and AKS, and the
real Kubernetes API server of the `control_plane` fixture (kwok nodes; what a test adds is
deleted after it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from moto import mock_aws
from typer.testing import CliRunner

from llmctl import clouds
from llmctl.catalog import CloudName
from llmctl.cli.main import app
from llmctl.clouds.aws import AwsCloud
from llmctl.clouds.gcp import GcpCloud
from llmctl.config import Stack
from llmctl.manifests import cluster_setup_objects
from tests.clouds.harness import azure_cloud, gcp_cloud
from tests.cluster.controlplane import ControlPlane
from tests.cluster.kit import get_json, gpu_node, only_these_gpu_nodes, wait_for
from tests.support.cli import python_on_src
from tests.support.cloud_env import clean_cloud_env
from tests.support.fake_aks import FakeAks
from tests.support.fake_eks import eks_cluster, strict_launch_templates
from tests.support.fake_gke import FakeGke
from tests.support.fake_service_quotas import ec2_quotas
from tests.support.http_fake import serve
from tests.support.kube_lists import ClusterObjects, crd, daemon_set, deployment, storage_class

__all__ = ["clean_cloud_env"]
runner = CliRunner()
CLUSTER_AUTOSCALER_IMAGE = "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.0"
pytestmark = pytest.mark.usefixtures("clean_cloud_env")


@pytest.fixture(autouse=True)
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMCTL_CONFIG", raising=False)
    for var in ("GPU_ENABLED", "GPU_INSTANCE_TYPE", "MAX_GPU_REPLICAS"):
        monkeypatch.delenv(var, raising=False)


def _where(obj: dict[str, Any]) -> list[str]:
    namespace = obj["metadata"].get("namespace")
    return ["-n", namespace] if namespace else []


def stored(plane: ControlPlane, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object as the API server holds it (with its managed fields), or None."""
    meta = obj["metadata"]
    kind = obj["kind"].lower()
    if not plane.kubectl(
        "get", kind, meta["name"], *_where(obj), "--ignore-not-found", "-o", "name"
    ).strip():
        return None
    return get_json(plane, kind, meta["name"], *_where(obj), "--show-managed-fields")


def applied_by_llmctl(plane: ControlPlane, obj: dict[str, Any]) -> bool:
    found = stored(plane, obj)
    return found is not None and ("llmctl", "Apply") in {
        (m["manager"], m["operation"]) for m in found["metadata"].get("managedFields", [])
    }


def setup_object(cloud: CloudName, kind: str) -> dict[str, Any]:
    return next(o for o in cluster_setup_objects(Stack(), cloud) if o["kind"] == kind)


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[ClusterObjects]:
    """Objects a test adds to the shared cluster; after the test they, and whatever `gpu enable`
    applied, are deleted."""
    objects = ClusterObjects(control_plane)
    yield objects
    for cloud in CloudName:
        objects.created += cluster_setup_objects(Stack(), cloud)
    objects.cleanup()


@pytest.fixture
def kubeconfig_file(control_plane: ControlPlane, cluster: ClusterObjects) -> str:
    return str(control_plane.kubeconfig)


@pytest.fixture
def eks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ec2_quotas(monkeypatch)
    strict_launch_templates(monkeypatch)
    with mock_aws():
        client = eks_cluster(node_role="arn:aws:iam::123456789012:role/n")
        monkeypatch.setitem(clouds.FACTORIES, CloudName.AWS, lambda: AwsCloud(poll_delay=1))
        yield client


@pytest.fixture
def gke(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGke]:
    """The GKE stand-in, served; `llmctl gpu --cloud gcp` talks to it."""
    stand_in = FakeGke()
    with serve(stand_in.route) as server:
        monkeypatch.setitem(clouds.FACTORIES, CloudName.GCP, lambda: gcp_cloud(server.url))
        yield stand_in


@pytest.fixture
def aks(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAks]:
    """The AKS stand-in, served; `llmctl gpu --cloud azure` talks to it."""
    stand_in = FakeAks()
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", stand_in.subscription)
    with serve(stand_in.route) as server:
        monkeypatch.setitem(clouds.FACTORIES, CloudName.AZURE, lambda: azure_cloud(server.url))
        yield stand_in


def run(*args: str, input: str | None = None) -> Any:
    # Wide, so that a hint holding this checkout's path is never wrapped mid-phrase.
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "400"})


def test_dry_run_prints_the_requests_and_calls_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # any call would fail loudly
    result = run("gpu", "enable", "--cloud", "aws", "--dry-run")
    assert result.exit_code == 0, result.output
    requests = yaml.safe_load(result.stdout)
    # The local disk's launch template first (issue 30), then the node group that names it.
    assert requests[0]["target"].startswith("ec2:CreateLaunchTemplate")
    assert requests[1]["target"].startswith("eks:CreateNodegroup")
    body = requests[1]["body"]
    assert (body["nodegroupName"], body["capacityType"], body["amiType"]) == (
        "gpu-t4",
        "SPOT",
        "AL2023_x86_64_NVIDIA",
    )
    assert body["launchTemplate"]["name"] == requests[0]["body"]["LaunchTemplateName"]
    applied = [r["body"] for r in requests[2:]]
    assert applied == cluster_setup_objects(Stack(), CloudName.AWS)
    assert all(r["method"] == "PATCH" for r in requests[2:])
    assert "GPU node pool plan" in result.stderr
    assert "NVMe instance store as one RAID0 array" in " ".join(result.stderr.split())


def test_dry_run_gcp_and_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    gcp = run(
        "gpu",
        "enable",
        "--cloud",
        "gcp",
        "--project",
        "proj",
        "--preemptible",
        "--dry-run",
        "--skip-cluster-setup",
    )
    assert gcp.exit_code == 0, gcp.output
    request = yaml.safe_load(gcp.stdout)[0]
    assert request["target"].endswith(
        "/projects/proj/locations/us-central1/clusters/llm-gcp/nodePools"
    )
    assert request["body"]["nodePool"]["config"]["preemptible"] is True
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-1")
    azure = run("gpu", "enable", "--cloud", "azure", "--dry-run", "--max-nodes", "5")
    assert azure.exit_code == 0, azure.output
    requests = yaml.safe_load(azure.stdout)
    assert requests[0]["method"] == "PUT"
    assert requests[0]["body"]["properties"]["maxCount"] == 5
    # AKS nodes have no `nvidia` containerd handler: the device plugin, no RuntimeClass.
    assert [r["body"]["kind"] for r in requests[1:]] == ["DaemonSet"]


def test_enable_creates_applies_and_is_idempotent(
    eks: Any, control_plane: ControlPlane, kubeconfig_file: str
) -> None:
    objects = cluster_setup_objects(Stack(), CloudName.AWS)
    assert [stored(control_plane, o) for o in objects] == [None] * len(objects)
    first = run("gpu", "enable", "--cloud", "aws", "--yes", "--kubeconfig", kubeconfig_file)
    # Review N15: no cluster-autoscaler here, so the pool is made but cannot scale from zero:
    # exit 1, saying so, so that automation notices.
    assert first.exit_code == 1, first.output
    assert "Created" in first.stderr
    said = " ".join(first.stderr.split())
    assert "is in place, but it cannot scale from zero: no cluster-autoscaler" in said
    group = eks.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")["nodegroup"]
    assert group["capacityType"] == "SPOT"
    # Every setup object is on the API server, applied server-side by the field manager llmctl.
    assert all(applied_by_llmctl(control_plane, o) for o in objects)

    second = run("gpu", "enable", "--cloud", "aws", "--kubeconfig", kubeconfig_file)
    assert second.exit_code == 1, second.output  # no prompt: nothing to confirm
    assert "nothing to change" in second.stderr
    assert "Created" not in second.stderr


def test_enable_asks_and_stops_on_no(eks: Any) -> None:
    result = run("gpu", "enable", "--cloud", "aws", "--skip-cluster-setup", input="n\n")
    assert result.exit_code == 1
    assert "Go ahead?" in result.output
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]


def test_enable_refuses_a_different_pool(eks: Any) -> None:
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    result = run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup", "--on-demand")
    assert result.exit_code == 1
    assert "capacity type: wants on-demand, has spot" in result.output
    assert "llmctl gpu disable --cloud aws" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def one_gpu_node(control_plane: ControlPlane, cluster: ClusterObjects) -> Iterator[None]:
    """Exactly one GPU node in the cluster, shaped as the AWS pool's nodes join, run by kwok."""
    only_these_gpu_nodes(control_plane, [gpu_node(CloudName.AWS, "ip-10-0-0-1")])
    yield
    # The test's DaemonSet and its pod go while kwok still runs the node (a pod left on a deleted
    # node waits for the pod garbage collector).
    cluster.cleanup()
    control_plane.kubectl("delete", "node", "ip-10-0-0-1", "--ignore-not-found")


def test_status_json_and_table(
    eks: Any,
    control_plane: ControlPlane,
    cluster: ClusterObjects,
    kubeconfig_file: str,
    one_gpu_node: None,
) -> None:
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    ds = setup_object(CloudName.AWS, "DaemonSet")
    cluster.add(ds)
    # The DaemonSet controller makes the plugin's pod on the GPU node; kwok runs it.
    selector = ",".join(f"{k}={v}" for k, v in ds["spec"]["selector"]["matchLabels"].items())

    def plugin_pod_ready() -> bool:
        namespace = ds["metadata"]["namespace"]
        pods = get_json(control_plane, "pods", "-n", namespace, "-l", selector)["items"]
        return len(pods) == 1 and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pods[0].get("status", {}).get("conditions", [])
        )

    wait_for("the device plugin pod on ip-10-0-0-1 to be Ready", plugin_pod_ready)
    result = run(
        "gpu", "status", "--cloud", "aws", "--output", "json", "--kubeconfig", kubeconfig_file
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pool"]["instanceType"] == "g4dn.xlarge"
    assert report["pool"]["capacityType"] == "spot"
    assert (report["pool"]["minNodes"], report["pool"]["maxNodes"]) == (0, 2)
    assert report["kubernetes"]["gpuNodes"] == [
        {
            "name": "ip-10-0-0-1",
            "accelerator": "nvidia-tesla-t4",
            "allocatableGpus": 1,
            "ready": True,
        }
    ]
    assert report["kubernetes"]["devicePluginPods"] == {"ready": 1, "total": 1}
    table = run("gpu", "status", "--cloud", "aws", "--kubeconfig", kubeconfig_file)
    assert table.exit_code == 0
    assert "g4dn.xlarge" in table.stdout and "Device plugin pods ready: 1/1" in table.stdout


def test_disable_deletes_after_confirmation(eks: Any) -> None:
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    kept = run("gpu", "disable", "--cloud", "aws", input="n\n")
    assert kept.exit_code == 1
    assert "gpu-t4" in eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]
    zero = run("gpu", "disable", "--cloud", "aws", "--yes", "--scale-to-zero")
    assert zero.exit_code == 0, zero.output
    assert "maxSize to be at least 1" in zero.stderr
    gone = run("gpu", "disable", "--cloud", "aws", "--yes")
    assert gone.exit_code == 0
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]
    again = run("gpu", "disable", "--cloud", "aws", "--yes")
    assert again.exit_code == 0 and "nothing to do" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-nodes", "0"], "below 1"),
        (["--min-nodes", "3", "--max-nodes", "2"], "above the maximum node count 2"),
        (["--set", "gpu.maxReplicas=5"], "pass --max-nodes 5"),
        (["--max-nodes", "101"], "above llmctl's limit of 100"),
        (["--instance-type", "n1-standard-4"], "not a aws GPU instance type"),
    ],
)
def test_invalid_node_counts_and_types_exit_2(args: list[str], message: str) -> None:
    result = run("gpu", "enable", "--cloud", "aws", "--dry-run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_max_nodes_above_three_when_asked_explicitly() -> None:
    result = run(
        "gpu",
        "enable",
        "--cloud",
        "aws",
        "--dry-run",
        "--max-nodes",
        "5",
        "--set",
        "gpu.maxReplicas=5",
    )
    assert result.exit_code == 0, result.output
    group = next(r for r in yaml.safe_load(result.stdout) if "CreateNodegroup" in r["target"])
    assert group["body"]["scalingConfig"]["maxSize"] == 5


def test_unknown_cloud_exit_2() -> None:
    result = run("gpu", "status", "--cloud", "ibm")
    assert result.exit_code == 2
    assert "unknown cloud 'ibm'" in result.output and "aws, azure, gcp" in result.output


@pytest.mark.parametrize(
    ("cloud", "module", "package"),
    [
        ("aws", "boto3", "boto3"),
        ("gcp", "google.cloud.container_v1", "google-cloud-container"),
        ("azure", "azure.mgmt.containerservice", "azure-mgmt-containerservice"),
    ],
)
def test_missing_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, cloud: str, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-1")
    result = run("gpu", "status", "--cloud", cloud, "--project", "proj", "--skip-cluster")
    assert result.exit_code == 1, result.output
    assert package in result.output
    assert "pip install" in result.output and "[cloud]" in result.output
    assert "'llmctl[cloud]'" not in result.output  # llmctl on PyPI is another project


def test_no_credentials_through_the_cli() -> None:
    result = run("gpu", "status", "--cloud", "aws", "--skip-cluster")
    assert result.exit_code == 1
    assert "no usable AWS credentials" in result.output and "AWS_PROFILE" in result.output


def test_gcp_through_the_cli(gke: FakeGke) -> None:
    args = ["--cloud", "gcp", "--project", "proj"]
    created = run("gpu", "enable", *args, "--yes", "--skip-cluster-setup")
    assert created.exit_code == 0, created.output
    assert "gpu-t4" in gke.pools
    again = run("gpu", "enable", *args, "--yes", "--skip-cluster-setup")
    assert "nothing to change" in again.stderr
    status = run("gpu", "status", *args, "--skip-cluster", "--output", "json")
    pool = json.loads(status.stdout)["pool"]
    assert (pool["instanceType"], pool["capacityType"], pool["status"]) == (
        "n1-standard-4",
        "spot",
        "RUNNING",
    )
    assert run("gpu", "disable", *args, "--yes").exit_code == 0
    assert gke.pools == {}


def test_enable_reports_a_pool_without_local_disk_and_goes_on(gke: FakeGke) -> None:
    """Issue 30: a pool made with `gpu.model.volume: ephemeral` (or by an older llmctl) has no
    Local SSD; no cloud adds one in place, and the pool works without it: enable says what it
    lacks and how to get it, changes nothing else, exits 0."""
    args = ["--cloud", "gcp", "--project", "proj", "--yes", "--skip-cluster-setup"]
    plain = run("gpu", "enable", *args, "--set", "gpu.model.volume=ephemeral")
    assert plain.exit_code == 0, plain.output
    assert gke.local_ssd_gb("gpu-t4") == 0
    again = run("gpu", "enable", *args)
    assert again.exit_code == 0, again.output
    said = " ".join(again.stderr.split())
    assert "Not changed local disk: the pool has none" in said
    assert "llmctl gpu disable --cloud gcp --cluster llm-gcp --yes" in said
    assert "nothing to change" in said
    assert gke.local_ssd_gb("gpu-t4") == 0
    status = run(
        "gpu", "status", "--cloud", "gcp", "--project", "proj", "--skip-cluster", "-o", "json"
    )
    assert json.loads(status.stdout)["pool"]["localDisk"] is False


def test_azure_through_the_cli(aks: FakeAks) -> None:
    created = run("gpu", "enable", "--cloud", "azure", "--yes", "--skip-cluster-setup")
    assert created.exit_code == 0, created.output
    assert aks.pools["gput4"]["properties"]["scaleSetPriority"] == "Spot"
    status = run("gpu", "status", "--cloud", "azure", "--skip-cluster")
    assert "Standard_NC4as_T4_v3" in status.stdout and "Succeeded" in status.stdout
    assert run("gpu", "disable", "--cloud", "azure", "--yes").exit_code == 0
    assert aks.pools == {}


def test_help_imports_no_cloud_sdk() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from llmctl.cli.main import app;"
        "r = CliRunner().invoke(app, ['gpu', 'enable', '--help']); assert r.exit_code == 0;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'kubernetes')"
        " or m.startswith(('google.cloud', 'azure.'))]; print(heavy); assert not heavy"
    )
    done = python_on_src(code)
    assert done.returncode == 0, done.stdout + done.stderr


def test_status_skip_cluster_prints_the_table_and_keeps_one_shape(eks: Any) -> None:
    # The review's finding 5: table mode crashed on the cluster *name* where a dict was expected.
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    table = run("gpu", "status", "--cloud", "aws", "--skip-cluster")
    assert table.exit_code == 0, table.output
    assert "g4dn.xlarge" in table.stdout and "Traceback" not in table.output
    report = json.loads(
        run("gpu", "status", "--cloud", "aws", "--skip-cluster", "-o", "json").stdout
    )
    assert report["cluster"] == "llm-aws" and report["kubernetes"] is None


def test_status_kubeconfig_hint_names_the_status_flag(eks: Any, tmp_path: Path) -> None:
    result = run(
        "gpu", "status", "--cloud", "aws", "--kubeconfig", str(tmp_path / "absent"), "-o", "json"
    )
    error = json.loads(result.stdout)["kubernetes"]["error"]
    assert "--skip-cluster skips" in error and "--skip-cluster-setup" not in error


def test_enable_refuses_when_the_pool_changed_after_the_plan_was_shown(
    eks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29: what the user confirms is what runs. Another actor changes the pool while the
    plan is on screen; enable applies nothing else in its place and exits 1."""
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0

    def someone_else_resizes_the_pool_then_yes() -> str:
        eks.update_nodegroup_config(
            clusterName="llm-aws",
            nodegroupName="gpu-t4",
            scalingConfig={"minSize": 0, "maxSize": 1, "desiredSize": 0},
        )
        return "y"

    monkeypatch.setattr("builtins.input", someone_else_resizes_the_pool_then_yes)
    result = run("gpu", "enable", "--cloud", "aws", "--skip-cluster-setup", "--max-nodes", "3")
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "change max nodes: 2 -> 3" in said  # the plan shown
    assert (
        "the aws GPU pool 'gpu-t4' in cluster 'llm-aws' changed after the plan was shown, so "
        "nothing was changed: it was to be updated (max nodes: 2 -> 3), but it would now be "
        "updated (max nodes: 1 -> 3)"
    ) in said
    assert "run the same `llmctl gpu enable` again" in said
    assert "Traceback" not in result.output
    # The other actor's size stands: enable did not apply its own plan over it.
    group = eks.describe_nodegroup(clusterName="llm-aws", nodegroupName="gpu-t4")["nodegroup"]
    assert group["scalingConfig"]["maxSize"] == 1


def test_prompt_without_a_terminal_says_to_pass_yes(eks: Any) -> None:
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    result = run("gpu", "disable", "--cloud", "aws", input="")
    assert result.exit_code == 2, result.output
    assert "--yes" in result.output
    assert "gpu-t4" in eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]


def test_ctrl_c_at_the_prompt_exits_130(eks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Click's confirm turned Ctrl-C into "Aborted!" and exit 1; everywhere else it is 130.
    def interrupted() -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    result = run("gpu", "enable", "--cloud", "aws", "--skip-cluster-setup")
    assert result.exit_code == 130, result.output
    assert "gpu-t4" not in eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]


def test_dry_run_shows_the_preflight(eks: Any, kubeconfig_file: str) -> None:
    """Issue 14: `--dry-run` shows what scale-from-zero lacks on this cluster, changing nothing."""
    result = run("gpu", "enable", "--cloud", "aws", "--dry-run", "--kubeconfig", kubeconfig_file)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "Preflight" in said
    assert "no node autoscaler: no cluster-autoscaler Deployment" in said
    assert "warn default StorageClass: no StorageClass is marked default" in said
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]


def test_enable_checks_the_cluster_before_changing_anything(eks: Any) -> None:
    """Review item 15: without a kubeconfig, enable stops before creating the pool."""
    result = run("gpu", "enable", "--cloud", "aws", "--yes")
    assert result.exit_code == 1
    assert "no usable kubeconfig" in result.output and "aws eks update-kubeconfig" in result.output
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]


def test_enable_leaves_an_existing_device_plugin_alone(
    eks: Any, control_plane: ControlPlane, cluster: ClusterObjects, kubeconfig_file: str
) -> None:
    """Review item 8: the GPU Operator's plugin runs already: llmctl applies no second one."""
    cluster.add(
        daemon_set(
            "gpu-operator",
            "nvidia-device-plugin-daemonset",
            "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
        ),
        crd("clusterpolicies.nvidia.com"),
        deployment("kube-system", "cluster-autoscaler", CLUSTER_AUTOSCALER_IMAGE),
    )
    result = run("gpu", "enable", "--cloud", "aws", "--yes", "--kubeconfig", kubeconfig_file)
    assert result.exit_code == 0, result.output
    assert "does not apply a second one" in " ".join(result.stderr.split())
    # Only the RuntimeClass was applied; llmctl's own DaemonSet is not on the API server.
    assert applied_by_llmctl(control_plane, setup_object(CloudName.AWS, "RuntimeClass"))
    assert stored(control_plane, setup_object(CloudName.AWS, "DaemonSet")) is None


def test_status_says_whether_the_pool_can_scale_from_zero(
    eks: Any, control_plane: ControlPlane, cluster: ClusterObjects, kubeconfig_file: str
) -> None:
    """Issue 14: per cloud, can a GPU node come up from zero now, and why not."""
    assert (
        run("gpu", "enable", "--cloud", "aws", "--yes", "--kubeconfig", kubeconfig_file).exit_code
        == 1  # created, but no cluster-autoscaler (review N15)
    )
    args = ["gpu", "status", "--cloud", "aws", "--kubeconfig", kubeconfig_file]
    before = json.loads(run(*args, "--output", "json").stdout)["scaleFromZero"]
    assert before["possible"] is False
    assert any("no cluster-autoscaler" in r for r in before["reasons"])
    table = run(*args)
    assert "Cannot scale from zero now" in table.stdout
    cluster.add(
        deployment("kube-system", "cluster-autoscaler", CLUSTER_AUTOSCALER_IMAGE),
        storage_class("gp3", True),
    )
    # The device plugin that `enable` applied is on the API server, and the preflight lists it.
    assert applied_by_llmctl(control_plane, setup_object(CloudName.AWS, "DaemonSet"))
    after = json.loads(run(*args, "--output", "json").stdout)["scaleFromZero"]
    assert after == {"possible": True, "reasons": []}
    assert "Can scale from zero now" in run(*args).stdout
    assert run("gpu", "disable", "--cloud", "aws", "--yes", "--scale-to-zero").exit_code == 0
    # EKS keeps max 1 after scale-to-zero: the autoscaler can still start one node.
    assert json.loads(run(*args, "--output", "json").stdout)["scaleFromZero"]["possible"] is True


def test_status_without_a_pool_or_cluster(eks: Any) -> None:
    result = run("gpu", "status", "--cloud", "aws", "--output", "json")
    report = json.loads(result.stdout)
    assert report["scaleFromZero"]["possible"] is False
    assert "no GPU pool 'gpu-t4'" in report["scaleFromZero"]["reasons"][0]


def test_every_gpu_command_has_the_shared_options_once() -> None:
    """Issue 18: the shared options are defined once (gpu_cmd.TARGET_OPTIONS) for every command."""
    from typer.main import get_command

    from llmctl.cli import gpu_cmd

    group = get_command(gpu_cmd.app)
    shared = {o.opts[0] for o in gpu_cmd.TARGET_OPTIONS.values() if hasattr(o, "opts")} or set()
    for name in ("enable", "status", "disable"):
        command = group.commands[name]  # type: ignore[attr-defined]
        flags = [flag for p in command.params for flag in p.opts]
        for flag in (
            "--cloud",
            "--cluster",
            "--region",
            "--resource-group",
            "--project",
            "--instance-type",
            "--config",
            "--set",
        ):
            assert flags.count(flag) == 1, (name, flag)
        assert shared <= set(flags)


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--cloud", "aws"], {"AWS_PROFILE": "nope"}, 2, "AWS profile not found"),
        (["--cloud", "aws", "--region", "bad region!"], {}, 2, "not an AWS region name"),
        (["--cloud", "aws", "--region", ""], {}, 2, "--region/--location is empty"),
        (["--cloud", "gcp", "--project", "proj", "--cluster", "a/b"], {}, 2, "not a valid GCP"),
        (["--cloud", "gcp", "--project", "p q"], {}, 2, "not a valid GCP name"),
        (["--cloud", "gcp", "--project", "proj"], {"GCP_DOWN": "1"}, 1, "cannot reach the Google"),
        (["--cloud", "azure", "--resource-group", "a/b"], {}, 2, "not a valid resource group"),
    ],
)
def test_review_inputs_end_in_one_line_and_the_documented_exit_code(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    """Issue 14 / review item 5: no traceback; exit 2 for usage or config, 1 for failures."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-1")
    if "GCP_DOWN" in env:
        monkeypatch.setitem(
            clouds.FACTORIES,
            CloudName.GCP,
            lambda: GcpCloud(endpoint="http://127.0.0.1:9", credentials=AnonymousCredentials()),
        )
    result = run("gpu", "status", *args, "--skip-cluster")
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_aks_managed_gpu_pool_gets_no_second_device_plugin(
    aks: FakeAks, control_plane: ControlPlane, kubeconfig_file: str
) -> None:
    """Review item 8: an AKS pool with managed GPU (gpuProfile.nvidia.managementMode Managed)
    runs AKS's own device plugin; llmctl applies none and status does not ask for one."""
    args = ["--cloud", "azure", "--kubeconfig", kubeconfig_file]
    assert run("gpu", "enable", *args, "--yes").exit_code == 0
    # AKS: the device plugin, applied by llmctl, and no RuntimeClass.
    plugin = setup_object(CloudName.AZURE, "DaemonSet")
    assert applied_by_llmctl(control_plane, plugin)
    assert stored(control_plane, setup_object(CloudName.AWS, "RuntimeClass")) is None
    aks.pools["gput4"]["properties"]["gpuProfile"] = {"nvidia": {"managementMode": "Managed"}}
    # Gone from the cluster: a second enable that applied it again would bring it back.
    meta = plugin["metadata"]
    control_plane.kubectl("delete", "daemonset", meta["name"], "-n", meta["namespace"], "--wait")
    again = run("gpu", "enable", *args, "--yes")
    assert again.exit_code == 0, again.output
    assert "managed NVIDIA device plugin" in " ".join(again.stderr.split())
    assert stored(control_plane, plugin) is None
    report = json.loads(run("gpu", "status", *args, "--output", "json").stdout)
    assert not any("device plugin" in r for r in report["scaleFromZero"]["reasons"])


# --- issue 26: the first day on a new cloud account ----------------------------------------------


def _said(result: Any) -> str:
    return " ".join(result.output.split())


def test_zero_quota_is_named_and_nothing_is_created_aws(
    eks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new AWS account: "All G and VT Spot Instance Requests" is 0 (here no value is applied
    and AWS's default is 0, so llmctl reads GetAWSDefaultServiceQuota)."""
    ec2_quotas(monkeypatch, {}, {"L-3819A6DF": 0})
    args = ["gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup"]
    result = run(*args)
    assert result.exit_code == 1, result.output
    said = _said(result)
    assert "no All G and VT Spot Instance Requests (L-3819A6DF): limit 0 vCPUs; 8 needed" in said
    assert (
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code "
        "L-3819A6DF --desired-value 8 --region us-east-1" in said
    )
    assert "nothing was changed" in said
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]
    dry = run("gpu", "enable", "--cloud", "aws", "--dry-run")
    assert dry.exit_code == 0 and "L-3819A6DF): limit 0" in _said(dry)
    forced = run(*args, "--ignore-quota")
    assert forced.exit_code == 0, forced.output
    assert "gpu-t4" in eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]


def test_on_demand_reads_the_on_demand_quota(eks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ec2_quotas(monkeypatch, {"L-3819A6DF": 0, "L-DB2E81BA": 4})
    args = ["gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup", "--on-demand"]
    result = run(*args, "--max-nodes", "1")
    assert result.exit_code == 0, result.output
    assert "ok Running On-Demand G and VT instances (L-DB2E81BA): limit 4 vCPUs; 4 needed" in (
        _said(result)
    )


def test_zero_quota_is_named_and_nothing_is_created_gcp(gke: FakeGke) -> None:
    gke.region_quotas.update(
        {"PREEMPTIBLE_NVIDIA_T4_GPUS": (0.0, 0.0), "NVIDIA_T4_GPUS": (0.0, 0.0)}
    )
    gke.project_quotas["GPUS_ALL_REGIONS"] = (0.0, 0.0)
    result = run(
        "gpu", "enable", "--cloud", "gcp", "--project", "proj", "--yes", "--skip-cluster-setup"
    )
    assert result.exit_code == 1, result.output
    said = _said(result)
    assert "no NVIDIA_T4_GPUS in us-central1: limit 0 GPUs, 0 in use; 2 needed" in said
    assert "no GPUS_ALL_REGIONS: limit 0 GPUs, 0 in use; 2 needed" in said
    assert "https://console.cloud.google.com/iam-admin/quotas?project=proj" in said
    assert gke.pools == {}


def test_zero_quota_is_named_and_nothing_is_created_azure(aks: FakeAks) -> None:
    aks.usages["lowPriorityCores"] = ("Total Regional Low-priority vCPUs", 0.0, 0.0)
    result = run(
        "gpu",
        "enable",
        "--cloud",
        "azure",
        "--resource-group",
        "llm-rg",
        "--yes",
        "--skip-cluster-setup",
    )
    assert result.exit_code == 1, result.output
    said = _said(result)
    assert "no Total Regional Spot vCPUs (lowPriorityCores): limit 0 vCPUs, 0 in use" in said
    assert "az quota update --resource-name lowPriorityCores" in said
    assert aks.pools == {}


def test_another_instance_type_never_adds_a_second_pool(eks: Any) -> None:
    """Issue 27 finding 4: g5.xlarge beside gpu-t4 made gpu-a10g, which disable left behind."""
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    args = ["--cloud", "aws", "--instance-type", "g5.xlarge"]
    result = run("gpu", "enable", *args, "--yes", "--skip-cluster-setup")
    assert result.exit_code == 1, result.output
    said = _said(result)
    assert "already has llmctl's GPU pool gpu-t4" in said
    assert "would add a second pool 'gpu-a10g'" in said
    assert sorted(eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]) == ["gpu-t4", "system"]
    note = run("gpu", "disable", *args, "--yes")
    assert note.exit_code == 0
    assert "llmctl's GPU pool(s) gpu-t4 of another GPU type" in _said(note)


def test_disable_leaves_another_teams_pool_alone(eks: Any) -> None:
    """Review N8: a `gpu-t4` group without llmctl's mark is not llmctl's to delete."""
    eks.create_nodegroup(
        clusterName="llm-aws",
        nodegroupName="gpu-t4",
        subnets=["subnet-a"],
        nodeRole="arn:aws:iam::123456789012:role/n",
        instanceTypes=["g4dn.xlarge"],
        tags={"team": "ml"},
    )
    result = run("gpu", "disable", "--cloud", "aws", "--yes")
    assert result.exit_code == 1
    assert "llmctl did not create it" in _said(result) and "--force" in _said(result)
    assert "gpu-t4" in eks.list_nodegroups(clusterName="llm-aws")["nodegroups"]
    refused = run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup")
    assert refused.exit_code == 1
    assert "owner: wants llmctl" in _said(refused)
    assert run("gpu", "disable", "--cloud", "aws", "--yes", "--force").exit_code == 0
    assert eks.list_nodegroups(clusterName="llm-aws")["nodegroups"] == ["system"]


def test_enable_exits_1_when_its_preflight_says_the_pool_cannot_scale(
    eks: Any, control_plane: ControlPlane, cluster: ClusterObjects, kubeconfig_file: str
) -> None:
    """Review N15, and N14: a device plugin installed after llmctl's leaves two plugins."""
    args = ["gpu", "enable", "--cloud", "aws", "--yes", "--kubeconfig", kubeconfig_file]
    cluster.add(deployment("kube-system", "cluster-autoscaler", CLUSTER_AUTOSCALER_IMAGE))
    assert run(*args).exit_code == 0
    cluster.add(
        daemon_set(
            "kube-system",
            "nvidia-device-plugin-daemonset",
            "nvcr.io/nvidia/k8s-device-plugin:v0.17.1",
        )
    )
    again = run(*args)
    assert again.exit_code == 1, again.output
    said = _said(again)
    assert "two device plugins: kube-system/nvidia-device-plugin-daemonset and llmctl's own" in said
    plugin = setup_object(CloudName.AWS, "DaemonSet")["metadata"]
    assert f"kubectl delete daemonset -n {plugin['namespace']} {plugin['name']}" in said
    status = run("gpu", "status", "--cloud", "aws", "--kubeconfig", kubeconfig_file, "-o", "json")
    reasons = json.loads(status.stdout)["scaleFromZero"]["reasons"]
    assert any("two device plugins" in r for r in reasons)


# What cluster-autoscaler records when a scale-up fails for quota: on GKE the pod event quoted in
# huggingface/Google-Cloud-Containers#126; the status ConfigMap in CA 1.30+'s YAML shape
# (clusterstate/api/types.go: nodeGroups[].scaleUp.status Backoff with backoffInfo).
GKE_QUOTA_EVENT = (
    "Node scale up in zones us-central1-c associated with this pod failed: GCE quota exceeded. "
    "Pod is at risk of not being scheduled."
)
MIG = "https://www.googleapis.com/compute/v1/projects/proj/zones/us-central1-c/instanceGroups/"
CA_STATUS = yaml.safe_dump(
    {
        "time": "2026-12-07 00:00:00.000000000 +0000 UTC",
        "autoscalerStatus": "Running",
        "clusterWide": {"health": {"status": "Healthy"}, "scaleUp": {"status": "Backoff"}},
        "nodeGroups": [
            {
                "name": MIG + "gke-llm-gcp-gpu-t4-1a2b3c4d-grp",
                "health": {"status": "Healthy", "cloudProviderTarget": 0, "maxSize": 2},
                "scaleUp": {
                    "status": "Backoff",
                    "backoffInfo": {
                        "errorCode": "QUOTA_EXCEEDED",
                        "errorMessage": "Instance creation failed: Quota "
                        "'PREEMPTIBLE_NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region "
                        "us-central1.",
                    },
                },
            },
            {
                "name": MIG + "gke-llm-gcp-default-pool-9f8e7d6c-grp",
                "health": {"status": "Healthy"},
                "scaleUp": {"status": "NoActivity"},
            },
        ],
    }
)


def _gpu_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": "llama-gpu-0"},
        "spec": {
            "containers": [
                {
                    "name": "llama",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    }


def _event(namespace: str, name: str, reason: str, message: str, pod: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod},
        "reason": reason,
        "message": message,
        "type": "Warning" if reason == "FailedScaleUp" else "Normal",
        "source": {"component": "cluster-autoscaler"},
        "firstTimestamp": "2026-12-07T00:00:00Z",
        "lastTimestamp": "2026-12-07T00:01:00Z",
        "count": 3,
    }


def test_status_shows_why_the_autoscaler_did_not_grow_the_pool(
    gke: FakeGke, control_plane: ControlPlane, cluster: ClusterObjects, kubeconfig_file: str
) -> None:
    """Review N1 (b): a GPU pod stays pending; the API server holds cluster-autoscaler's events
    and status ConfigMap, and Karpenter's NodeClaim; status says why, with the quota advice."""
    args = ["--cloud", "gcp", "--project", "proj", "--kubeconfig", kubeconfig_file]
    assert run("gpu", "enable", *args, "--yes", "--skip-cluster-setup").exit_code == 0
    namespace = "gpu-wait"
    cluster.add(
        _gpu_pod(namespace),
        _event(namespace, "llama-gpu-0.quota", "FailedScaleUp", GKE_QUOTA_EVENT, "llama-gpu-0"),
        _event(
            namespace,
            "llama-gpu-0.other",
            "NotTriggerScaleUp",
            "pod didn't trigger scale-up: 1 max node group size reached",
            "llama-gpu-0",
        ),
        # An event about a pod that is not pending (or gone) is not this pool's story.
        _event(namespace, "old.quota", "FailedScaleUp", "an old failure", "old-pod"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"namespace": "kube-system", "name": "cluster-autoscaler-status"},
            "data": {"status": CA_STATUS},
        },
        crd("nodeclaims.karpenter.sh"),
    )
    report = json.loads(run("gpu", "status", *args, "-o", "json").stdout)
    said = report["kubernetes"]["autoscaler"]
    messages = [r["message"] for r in said]
    assert GKE_QUOTA_EVENT in messages
    assert "pod didn't trigger scale-up: 1 max node group size reached" in messages
    assert "an old failure" not in messages
    backoff = next(m for m in messages if "backs off" in m)
    assert "gke-llm-gcp-gpu-t4-1a2b3c4d-grp backs off scale-up: QUOTA_EXCEEDED" in backoff
    assert not any("default-pool" in m for m in messages)
    verdict = report["scaleFromZero"]
    assert verdict["possible"] is False
    quota_reason = next(r for r in verdict["reasons"] if "GCE quota exceeded" in r)
    assert "PREEMPTIBLE_NVIDIA_T4_GPUS" in quota_reason
    assert "console.cloud.google.com/iam-admin/quotas?project=proj" in quota_reason
    table = run("gpu", "status", *args)
    assert "FailedScaleUp on pod gpu-wait/llama-gpu-0: Node scale up" in " ".join(
        table.stdout.split()
    )


def test_status_reads_karpenter_nodeclaims(
    eks: Any, control_plane: ControlPlane, cluster: ClusterObjects, kubeconfig_file: str
) -> None:
    cluster.add(crd("nodepools.karpenter.sh"), crd("nodeclaims.karpenter.sh"))
    cluster.add(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "gpu-x7k2p"},
            "spec": {
                "resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "500m"}},
                "nodeClassRef": {
                    "group": "karpenter.k8s.aws",
                    "kind": "EC2NodeClass",
                    "name": "gpu",
                },
            },
            "status": {
                "conditions": [
                    {
                        "type": "Launched",
                        "status": "False",
                        "reason": "LaunchFailed",
                        "message": "creating instance, MaxSpotInstanceCountExceeded: Max spot "
                        "instance count exceeded",
                        "lastTransitionTime": "2026-12-07T00:00:00Z",
                    }
                ]
            },
        }
    )
    assert run("gpu", "enable", "--cloud", "aws", "--yes", "--skip-cluster-setup").exit_code == 0
    args = ["gpu", "status", "--cloud", "aws", "--kubeconfig", kubeconfig_file, "-o", "json"]
    report = json.loads(run(*args).stdout)
    claim = report["kubernetes"]["autoscaler"][0]
    assert claim["source"] == "Karpenter NodeClaim gpu-x7k2p"
    assert (
        "Launched LaunchFailed: creating instance, MaxSpotInstanceCountExceeded" in claim["message"]
    )
    assert any("L-3819A6DF" in r for r in report["scaleFromZero"]["reasons"])


def test_status_reads_the_quota_for_the_pools_own_size(
    eks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2_quotas(monkeypatch, {"L-3819A6DF": 4})
    args = ["--cloud", "aws", "--skip-cluster-setup", "--yes", "--max-nodes", "1"]
    assert run("gpu", "enable", *args).exit_code == 0
    report = json.loads(
        run("gpu", "status", "--cloud", "aws", "--skip-cluster", "-o", "json").stdout
    )
    [quota] = report["quota"]["quotas"]
    assert (quota["limit"], quota["needed"], quota["enough"]) == (4, 4, True)
    assert not any("quota" in r for r in report["scaleFromZero"]["reasons"])
    ec2_quotas(monkeypatch, {"L-3819A6DF": 0})
    report = json.loads(
        run("gpu", "status", "--cloud", "aws", "--skip-cluster", "-o", "json").stdout
    )
    assert report["scaleFromZero"]["possible"] is False
    assert any("quota too low: All G and VT" in r for r in report["scaleFromZero"]["reasons"])
