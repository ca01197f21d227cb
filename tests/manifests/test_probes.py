"""The llama.cpp containers' startup probe, as both render paths write it (issue 30): a short
period, so a loaded server is Ready within about a second, with the same 900 s budget for a
slow load (a 7B model from a cold disk) that the old 10 s x 90 gave."""

from __future__ import annotations

from typing import Any

import pytest

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.manifests.build import built_objects
from tests.charts import helm

STARTUP_BUDGET_S = 900
MAX_PERIOD_S = 2


def _llama_containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].endswith("llm-server"):
            container = obj["spec"]["template"]["spec"]["containers"][0]
            found[obj["metadata"]["name"]] = container
    return found


def _check(containers: dict[str, dict[str, Any]]) -> None:
    assert containers, "no llama.cpp Deployment rendered"
    for name, container in containers.items():
        probe = container["startupProbe"]
        assert probe["httpGet"]["path"] == "/health", name
        assert probe["periodSeconds"] <= MAX_PERIOD_S, (name, probe)
        assert probe["periodSeconds"] * probe["failureThreshold"] == STARTUP_BUDGET_S, (
            name,
            probe,
        )


@pytest.mark.parametrize("cloud", list(catalog.CLOUDS), ids=lambda c: c.value)
def test_rendered_overlays_poll_startup_every_second_or_two_within_900_s(
    cloud: CloudName,
) -> None:
    _check(_llama_containers(built_objects(Stack(), cloud, True)))


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_chart_polls_startup_every_second_or_two_within_900_s(tier: str) -> None:
    objects = helm.template("-f", helm.values_file("aws", tier))
    containers = _llama_containers(objects)
    if tier == "gpu":
        assert any("gpu" in name for name in containers)
    _check(containers)
