"""Every catalog model is pinned to a Hub commit and the file's sha256, and the pods check it
(issue 28: "checks a pinned sha256 by default for catalog models")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmctl import catalog
from llmctl.config import ModelSpec, Stack
from llmctl.manifests.build import built_objects

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.mark.parametrize("name", sorted(catalog.MODELS))
def test_catalog_model_names_its_commit_and_digest(name: str) -> None:
    info = catalog.MODELS[name]
    assert HEX40.match(info.revision), f"{name}: no Hub commit pinned"
    assert info.sha256 is not None and HEX64.match(info.sha256), f"{name}: no sha256 pinned"
    # The download is the file at that commit, not whatever `main` points at today.
    assert info.uri.endswith(f"/resolve/{info.revision}/{info.filename}"), info.uri
    assert "/resolve/main/" not in info.uri


@pytest.mark.parametrize("name", sorted(catalog.MODELS))
def test_a_catalog_model_in_the_config_carries_its_digest(name: str) -> None:
    spec = ModelSpec.from_catalog(name, "20Gi")
    assert spec.sha256 == catalog.MODELS[name].sha256


def _init_env(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    (obj,) = (
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment
    )
    (fetch,) = obj["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e.get("value", "") for e in fetch["env"]}


@pytest.mark.parametrize("cloud", catalog.CLOUDS, ids=[c.value for c in catalog.CLOUDS])
def test_default_pods_check_the_pinned_digest(cloud: catalog.CloudName) -> None:
    """With the default config both llama tiers' init containers get the catalog's digest, so
    the download is checked without the user writing one."""
    objects = built_objects(Stack(), cloud, gpu=True)
    cpu = catalog.MODELS[catalog.CPU_DEFAULT_MODEL]
    gpu = catalog.MODELS[catalog.GPU_DEFAULT_MODEL]
    assert _init_env(objects, "cpu-llm-server")["MODEL_SHA256"] == cpu.sha256
    assert _init_env(objects, "gpu-llm-server")["MODEL_SHA256"] == gpu.sha256
