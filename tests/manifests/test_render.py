"""The rendered tree: deterministic, current, built by the real kustomize, valid, and safe."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack
from llmctl.cost.prices import Capacity, load_catalog
from llmctl.manifests import cluster_setup_objects
from llmctl.manifests.build import built_objects
from llmctl.manifests.render import render_tree
from llmctl.manifests.writer import tree_files, write_files
from tests.support.kube_schema import validate_strict
from tests.support.tools import require_tool

STACK = Stack()
CASES = [(cloud, gpu) for cloud in catalog.CLOUDS for gpu in (False, True)]


def _dir(cloud: CloudName, gpu: bool) -> str:
    return f"{cloud.value}/overlays/gpu" if gpu else f"{cloud.value}/base"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("render") / "clusters"
    write_files(root, tree_files(render_tree(STACK)))
    return root


def test_committed_clusters_tree_is_what_the_defaults_render(repo: Path) -> None:
    expected = {
        str(p): text for p, text in tree_files(render_tree(load_stack(env={}).stack)).items()
    }
    committed = {
        str(p.relative_to(repo / "clusters")): p.read_text(encoding="utf-8")
        for p in (repo / "clusters").rglob("*")
        if p.is_file()
    }
    stale = sorted(
        k for k in expected.keys() | committed.keys() if expected.get(k) != committed.get(k)
    )
    assert not stale, f"clusters/ is stale in {stale}: run `llmctl render` and commit the result"


def test_render_is_byte_identical_on_a_rerun() -> None:
    first = tree_files(render_tree(STACK))
    second = tree_files(render_tree(STACK))
    assert first == second


def test_rerender_writes_nothing(tmp_path: Path) -> None:
    files = tree_files(render_tree(STACK))
    assert len(write_files(tmp_path, files).written) == len(files)
    again = write_files(tmp_path, files)
    assert again.written == [] and len(again.unchanged) == len(files)


def test_tree_has_six_trees_and_the_component(rendered: Path) -> None:
    dirs = {str(p.parent.relative_to(rendered)) for p in rendered.rglob("kustomization.yaml")}
    assert dirs == {_dir(c, g) for c, g in CASES} | {"components/nvidia-gpu"}
    component = yaml.safe_load((rendered / "components/nvidia-gpu/kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    for cloud in catalog.CLOUDS:
        overlay = yaml.safe_load((rendered / _dir(cloud, True) / "kustomization.yaml").read_text())
        assert overlay["components"] == ["../../../components/nvidia-gpu"]
        assert "patchesStrategicMerge" not in overlay and overlay["patches"]


@pytest.mark.parametrize(("cloud", "gpu"), CASES, ids=[_dir(c, g) for c, g in CASES])
def test_kubectl_kustomize_builds_exactly_what_render_stdout_prints(
    rendered: Path, cloud: CloudName, gpu: bool
) -> None:
    kubectl = require_tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(rendered / _dir(cloud, gpu))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert list(yaml.safe_load_all(out)) == built_objects(STACK, cloud, gpu)


@pytest.mark.parametrize(("cloud", "gpu"), CASES, ids=[_dir(c, g) for c, g in CASES])
def test_every_built_object_passes_the_strict_kubernetes_schema(
    cloud: CloudName, gpu: bool
) -> None:
    for obj in built_objects(STACK, cloud, gpu):
        validate_strict(obj)


def test_yamllint_passes_on_the_tree(rendered: Path, repo: Path) -> None:
    yamllint = require_tool("yamllint")
    result = subprocess.run(
        [yamllint, "--strict", "-c", str(repo / ".yamllint.yaml"), str(rendered)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


# Node agents that need the host: they live in kube-system and run as root (see README).
NODE_AGENTS = {"nvidia-device-plugin", "dcgm-exporter"}


@pytest.mark.parametrize(("cloud", "gpu"), CASES, ids=[_dir(c, g) for c, g in CASES])
def test_labels_and_security_defaults_on_every_object(cloud: CloudName, gpu: bool) -> None:
    for obj in built_objects(STACK, cloud, gpu):
        name = obj["metadata"]["name"]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "llm-router", name
        assert labels["app.kubernetes.io/managed-by"] == "llmctl"
        assert {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        } <= labels.keys()
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in _containers(obj):
            security = container["securityContext"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container.get("resources", {}).get("requests"), container["name"]
            if name in NODE_AGENTS:
                assert obj["metadata"]["namespace"] == "kube-system"
                if security.get("privileged"):  # GKE's DCGM exporter only, see the overlay
                    assert (cloud, name) == (CloudName.GCP, "dcgm-exporter")
                    continue
            else:
                assert security["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}


def _by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_base_runs_the_cpu_server_with_probes_and_its_own_model_volume() -> None:
    objects = _by_name(built_objects(STACK, CloudName.AWS, gpu=False))
    assert ("Deployment", "gpu-llm-server") not in objects
    deployment = objects[("Deployment", "cpu-llm-server")]
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == STACK.images.llama_server
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    assert server["resources"]["limits"]["memory"] == STACK.cpu.resources.limits.memory
    fetch = pod["initContainers"][0]
    script = fetch["command"][-1]
    assert 'if [ -s "$MODEL_PATH" ]' in script and "exit 0" in script  # a restart reuses it
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in fetch["env"]}
    assert env == {
        "MODEL_URI": STACK.cpu.model.uri,
        "MODEL_PATH": STACK.cpu.model.path,
        # The catalog's pinned digest (tests/test_catalog_pins.py).
        "MODEL_SHA256": STACK.cpu.model.sha256,
        # The Hub token from a Secret the pod starts without.
        "HF_TOKEN": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}},
    }
    # The download runs in the router image: nothing from Docker Hub.
    assert fetch["image"] == STACK.images.router
    assert not [key for key in objects if key[0] == "PersistentVolumeClaim"]  # none shared
    claim = pod["volumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == STACK.cpu.model.storage_size
    policy = objects[("NetworkPolicy", "cpu-llm-server-ingress")]
    assert policy["spec"]["ingress"][0]["from"] == [
        {
            "podSelector": {
                "matchLabels": objects[("Deployment", "llm-router")]["spec"]["selector"][
                    "matchLabels"
                ]
            }
        }
    ]
    assert {
        ("ServiceAccount", "llm-router"),
        ("ConfigMap", "llm-router-config"),
        ("Service", "llm-router"),
        ("PodDisruptionBudget", "llm-router"),
        ("Namespace", "llm-server"),
        ("Service", "cpu-llm-server"),
    } <= objects.keys()


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_gpu_overlay_schedules_on_gpu_nodes_of_that_cloud(cloud: CloudName) -> None:
    objects = _by_name(built_objects(STACK, cloud, gpu=True))
    deployment = objects[("Deployment", "gpu-llm-server")]
    assert "replicas" not in deployment["spec"]  # KEDA owns them
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == STACK.images.llama_server_cuda
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {
        "compute": "gpu-enabled",
        "llmctl.dev/accelerator": "nvidia-tesla-t4",
    }
    tolerated = {(t["key"], t.get("value")) for t in pod["tolerations"]}
    assert ("nvidia.com/gpu", None) in tolerated
    spot = catalog.CLOUD_FACTS[cloud].spot_taint
    if spot is not None:
        assert (spot.key, spot.value) in tolerated
    expected_spot = {
        CloudName.AWS: None,
        CloudName.AZURE: "kubernetes.azure.com/scalesetpriority",
        CloudName.GCP: "cloud.google.com/gke-spot",
    }[cloud]
    assert (spot.key if spot else None) == expected_spot
    assert ("RuntimeClass", "nvidia") in objects
    assert pod.get("runtimeClassName") == ("nvidia" if cloud is CloudName.AWS else None)
    plugin = objects.get(("DaemonSet", "nvidia-device-plugin"))
    if cloud is CloudName.GCP:
        assert plugin is None  # GKE runs its own device plugin
    else:
        assert plugin is not None
        plugin_pod = plugin["spec"]["template"]["spec"]
        assert plugin_pod["nodeSelector"] == {"compute": "gpu-enabled"}
        assert {t["key"] for t in plugin_pod["tolerations"]} >= {"nvidia.com/gpu"}
        assert ":v" in plugin_pod["containers"][0]["image"]  # a pinned release
    router_config = yaml.safe_load(
        objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"]
    )
    assert [b["tier"] for b in router_config["backends"]] == ["cpu", "gpu"]
    # Each request's share of a spot node's price feeds llm_router_cost_usd_total.
    prices = load_catalog()
    region = STACK.clouds.of(cloud).region
    gpu_node = prices.node_hourly_usd(
        cloud, region, STACK.gpu.instance_types.of(cloud), Capacity.SPOT
    )
    assert router_config["backends"][1]["hourlyCostUsd"] == round(gpu_node, 4) > 0
    assert router_config["backends"][0]["hourlyCostUsd"] > 0
    assert router_config["backends"][1]["url"].startswith("http://gpu-llm-server.llm-server.svc")


def test_router_pods_roll_when_the_backend_table_changes() -> None:
    def annotation(gpu: bool) -> str:
        router = _by_name(built_objects(STACK, CloudName.AWS, gpu))[("Deployment", "llm-router")]
        return str(
            router["spec"]["template"]["metadata"]["annotations"]["llmctl.dev/router-config-sha256"]
        )

    assert annotation(False) != annotation(True)


@pytest.mark.parametrize("cloud", catalog.CLOUDS)
def test_cluster_setup_objects_are_the_overlays_own(cloud: CloudName) -> None:
    objects = cluster_setup_objects(STACK, cloud)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == (["RuntimeClass"] if cloud is CloudName.GCP else ["DaemonSet", "RuntimeClass"])
    built = built_objects(STACK, cloud, gpu=True)
    assert all(obj in built for obj in objects)


def test_instance_type_choice_changes_the_accelerator_label() -> None:
    stack = Stack.model_validate({"gpu": {"instanceTypes": {"aws": "g5.xlarge"}}})
    pod = _by_name(built_objects(stack, CloudName.AWS, gpu=True))[("Deployment", "gpu-llm-server")]
    assert (
        pod["spec"]["template"]["spec"]["nodeSelector"]["llmctl.dev/accelerator"] == "nvidia-a10g"
    )
