"""`test-inference --cloud` finds a Helm release's router: --service and --namespace reach the
port-forward and the GPU check pod (the overlays' names stay the defaults)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from llmctl.catalog import CloudName
from llmctl.cli import inference_cmd
from llmctl.cli.main import app
from llmctl.config import Stack
from llmctl.probe import portforward
from llmctl.probe.gpu_check import check_pod


class _Found(Exception):
    pass


def test_service_and_namespace_reach_the_port_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, ...]] = []

    def router_target(api: Any, namespace: str, service: str) -> Any:
        asked.append((namespace, service))
        raise _Found

    monkeypatch.setattr(portforward, "router_target", router_target)
    with pytest.raises(_Found):
        with inference_cmd._router_url(
            None, CloudName.AWS, object(), False, "ai", "prod-llm-router"
        ):
            pass
    with pytest.raises(_Found):
        with inference_cmd._router_url(None, CloudName.AWS, object(), False):
            pass
    assert asked == [("ai", "prod-llm-router"), ("llm-server", "llm-router")]


def test_the_options_are_documented_for_a_helm_release() -> None:
    result = CliRunner().invoke(app, ["test-inference", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--service" in result.output and "<release>-llm-router" in result.output
    assert "--namespace" in result.output


def test_the_gpu_check_pod_goes_to_the_release_namespace() -> None:
    assert check_pod(Stack(), CloudName.AWS, namespace="ai")["metadata"]["namespace"] == "ai"
    assert check_pod(Stack(), CloudName.AWS)["metadata"]["namespace"] == "llm-server"
