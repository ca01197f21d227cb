"""The router started from the ConfigMap `llmctl render` writes honours llmctl.yaml's
router.gpuWait and named keys (session 34): the real router (`llmctl router serve`) in front of
real llama-servers, with router.yaml exactly as rendered except for the backends' URLs (cluster
DNS names here become the loopback servers), and the API keys in the variable the rendered
Deployment fills from the Secret, as the kubelet would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmctl.catalog import CloudName
from llmctl.config import load_stack
from llmctl.manifests.build import built_objects
from tests.router.test_gpu_wait import HEADER, Call, Tiers, chat, metrics, wait_until, waiting
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess

pytestmark = pytest.mark.e2e

LLMCTL_YAML = """\
gpu:
  enabled: true
router:
  apiKeys:
    secretName: router-keys
    keys:
      - name: team-a
      - name: batch
        tiers: [cpu]
  gpuWait:
    defaultSeconds: 90
    maxSeconds: 120
"""
# What `kubectl create secret generic router-keys --from-literal=api-keys=...` would hold.
SECRET_VALUE = "team-a:sk-team-a-0123,batch:sk-batch-4567"
TEAM = {"authorization": "Bearer sk-team-a-0123"}
BATCH = {"authorization": "Bearer sk-batch-4567"}


def rendered(tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """router.yaml from the rendered aws GPU overlay, and the router's environment from the
    Secret its Deployment names (the value SECRET_VALUE stands in for)."""
    path = tmp_path / "llmctl.yaml"
    path.write_text(LLMCTL_YAML)
    stack = load_stack(config_file=path, env={}).stack
    # The catalog's models, the names the tests' llama-servers serve.
    assert stack.cpu.model.name == CPU_MODEL and stack.gpu.model.name == GPU_MODEL
    built = built_objects(stack, CloudName.AWS, gpu=True)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built}
    table: dict[str, Any] = yaml.safe_load(
        objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"]
    )
    container = objects[("Deployment", "llm-router")]["spec"]["template"]["spec"]["containers"][0]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert list(from_secret.values()) == [{"name": "router-keys", "key": "api-keys"}]
    return table, dict.fromkeys(from_secret, SECRET_VALUE)


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[Tiers]:
    tiers = Tiers(tmp_path)
    try:
        yield tiers
    finally:
        tiers.stop()


def fallbacks(router: RouterProcess, reason: str) -> float:
    return sum(
        value
        for (name, labels), value in metrics(router).items()
        if name == "llm_router_fallbacks_total" and ("reason", reason) in labels
    )


def test_a_router_from_the_rendered_configmap_waits_by_default_and_keeps_a_key_to_its_tier(
    tmp_path: Path, tiers: Tiers
) -> None:
    table, env = rendered(tmp_path)
    assert table["gpuWait"]["defaultSeconds"] == 90
    urls = {"cpu": tiers.cpu.url, "gpu": tiers.gpu.url}
    for backend in table["backends"]:
        backend["url"] = urls[backend["tier"]]  # the only change: loopback, not cluster DNS
    router = RouterProcess(table, tmp_path, env=env).start()
    try:
        post = router.url + "/v1/chat/completions"
        assert httpx.post(post, json=chat(), timeout=60).status_code == 401  # keys are on

        # batch may use the CPU tier only: its GPU request is served there at once, and with
        # x-llm-require-tier: gpu refused, without waiting for the GPU tier's default wait.
        answer = httpx.post(post, json=chat(), headers=BATCH, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-llm-tier"] == "cpu-fallback"
        assert fallbacks(router, "gpu_not_allowed") == 1
        refused = httpx.post(
            post, json=chat(), headers={**BATCH, "x-llm-require-tier": "gpu"}, timeout=60
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tier_not_allowed"
        assert waiting(router) == 0

        # team-a sends no x-llm-gpu-wait: gpuWait.defaultSeconds (90) holds its GPU request.
        held = Call(router, TEAM)
        wait_until("team-a's request to wait for the GPU", lambda: waiting(router) == 1)
        # Its own header still wins: 0 opts out, so the CPU answers at once.
        now = httpx.post(post, json=chat(), headers={**TEAM, HEADER: "0"}, timeout=60)
        assert now.status_code == 200 and now.headers["x-llm-tier"] == "cpu-fallback"
        assert held.response is None and waiting(router) == 1

        tiers.gpu.start()  # the GPU pool wakes
        answer = held.result()
        assert answer.status_code == 200, held.content
        assert answer.headers["x-llm-tier"] == "gpu"
        assert metrics(router)[("llm_router_gpu_waits_total", (("outcome", "gpu"),))] == 1

        # With the GPU ready, batch is still kept to the CPU tier.
        wait_until(
            "the GPU backend to be ready",
            lambda: httpx.get(router.url + "/readyz", timeout=10).json()["backends"]["aws/gpu"],
        )
        answer = httpx.post(post, json=chat(), headers=BATCH, timeout=60)
        assert answer.status_code == 200 and answer.headers["x-llm-tier"] == "cpu-fallback"
        assert fallbacks(router, "gpu_not_allowed") == 2
    finally:
        router.stop()
