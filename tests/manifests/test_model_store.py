"""Issue 30: with `modelStore.<cloud>` set, that cloud's llama pods fetch the store's copy with
the pod's fetcher, as the model-reading service account; unset, they download from the Hub."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.catalog import CloudName
from llmctl.config import Stack, load_stack, parse_set_flags
from llmctl.manifests.build import built_objects
from llmctl.manifests.render import render_tree
from llmctl.manifests.writer import tree_files, write_files
from tests.support.kube_schema import validate_strict
from tests.support.tools import require_tool

SETTINGS = [
    "modelStore.aws.bucket=acme-llm-models",
    "modelStore.aws.roleArn=arn:aws:iam::123456789012:role/llm-model-reader",
    "modelStore.gcp.bucket=acme-llm-models-gcp",
    "modelStore.gcp.serviceAccount=model-reader@acme.iam.gserviceaccount.com",
    "modelStore.azure.account=acmellmmodels",
    "modelStore.azure.container=models",
    "modelStore.azure.clientId=0b3f1c52-6f0e-4f7d-9a55-2f3c8f1e9a10",
]
WITH_STORE = load_stack(env={}, flags=parse_set_flags(SETTINGS)).stack
EXPECTED_GPU_URI = {
    CloudName.AWS: "s3://acme-llm-models/llmctl/models/llama-2-7b-chat/llama-2-7b-chat.Q4_K_M.gguf",
    CloudName.GCP: "gs://acme-llm-models-gcp/llmctl/models/llama-2-7b-chat/llama-2-7b-chat.Q4_K_M.gguf",
    CloudName.AZURE: "azure://acmellmmodels/models/llmctl/models/llama-2-7b-chat/"
    "llama-2-7b-chat.Q4_K_M.gguf",
}
ANNOTATION = {
    CloudName.AWS: (
        "eks.amazonaws.com/role-arn",
        "arn:aws:iam::123456789012:role/llm-model-reader",
    ),
    CloudName.GCP: ("iam.gke.io/gcp-service-account", "model-reader@acme.iam.gserviceaccount.com"),
    CloudName.AZURE: ("azure.workload.identity/client-id", "0b3f1c52-6f0e-4f7d-9a55-2f3c8f1e9a10"),
}


def _deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def _fetcher(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers"] if c["name"] == "fetch-model")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("cloud", list(CloudName))
def test_both_tiers_fetch_the_stores_copy_as_the_model_reader(cloud: CloudName) -> None:
    objects = built_objects(WITH_STORE, cloud, True)
    for name in ("cpu-llm-server", "gpu-llm-server"):
        deployment = _deployment(objects, name)
        pod = deployment["spec"]["template"]
        fetcher = _fetcher(deployment)
        env = _env(fetcher)
        assert fetcher["image"] == WITH_STORE.images.router
        assert fetcher["command"] == ["llmctl", "model", "fetch"]
        assert env["MODEL_URI"].startswith(
            {"aws": "s3://", "gcp": "gs://", "azure": "azure://"}[cloud.value]
        )
        # The Hub's path and the catalog's pinned digest stay: the store holds the same file.
        assert env["MODEL_PATH"].startswith("/models/")
        assert pod["spec"]["serviceAccountName"] == "llm-model-reader"
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert ("azure.workload.identity/use" in pod["metadata"]["labels"]) == (
            cloud is CloudName.AZURE
        )
        assert (env.get("AWS_REGION") == WITH_STORE.clouds.aws.region) == (cloud is CloudName.AWS)
    gpu_env = _env(_fetcher(_deployment(objects, "gpu-llm-server")))
    assert gpu_env["MODEL_URI"] == EXPECTED_GPU_URI[cloud]
    assert gpu_env["MODEL_SHA256"] == WITH_STORE.gpu.model.sha256
    account = next(o for o in objects if o["metadata"]["name"] == "llm-model-reader")
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["namespace"] == "llm-server"
    key, value = ANNOTATION[cloud]
    assert account["metadata"]["annotations"] == {key: value}
    for obj in objects:
        validate_strict(obj)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_without_a_store_the_pods_download_from_the_hub(cloud: CloudName) -> None:
    objects = built_objects(Stack(), cloud, True)
    assert not [o for o in objects if o["metadata"]["name"] == "llm-model-reader"]
    for name in ("cpu-llm-server", "gpu-llm-server"):
        deployment = _deployment(objects, name)
        assert "serviceAccountName" not in deployment["spec"]["template"]["spec"]
        assert _env(_fetcher(deployment))["MODEL_URI"].startswith("https://huggingface.co/")


def test_a_store_on_one_cloud_leaves_the_others_on_the_hub() -> None:
    stack = load_stack(env={}, flags=parse_set_flags(["modelStore.gcp.bucket=only-gcp"])).stack
    gcp = _env(_fetcher(_deployment(built_objects(stack, CloudName.GCP, True), "gpu-llm-server")))
    aws = _env(_fetcher(_deployment(built_objects(stack, CloudName.AWS, True), "gpu-llm-server")))
    assert gcp["MODEL_URI"].startswith("gs://only-gcp/")
    assert aws["MODEL_URI"].startswith("https://huggingface.co/")


def test_kubectl_kustomize_builds_the_same_objects_with_a_store(tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    write_files(tmp_path, tree_files(render_tree(WITH_STORE)))
    for cloud in CloudName:
        out = subprocess.run(
            [kubectl, "kustomize", str(tmp_path / cloud.value / "overlays" / "gpu")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert list(yaml.safe_load_all(out)) == built_objects(WITH_STORE, cloud, True)


def test_a_bad_store_setting_is_one_line_with_its_source() -> None:
    from llmctl.errors import ConfigError

    with pytest.raises(ConfigError, match="modelStore.azure.account"):
        load_stack(
            env={},
            flags=parse_set_flags(
                ["modelStore.azure.account=Not_Valid", "modelStore.azure.container=models"]
            ),
        )
