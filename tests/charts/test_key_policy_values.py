"""The chart carries named keys and the budgets' store into router.yaml (issue 31)."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmctl.router.key_config import OverBudget
from llmctl.router.table import RouterConfig
from tests.charts.helm import by_name, template, template_error, values_file

VALUES = """\
router:
  apiKeys:
    secretName: router-keys
    keys:
      - {name: team-a, gpuTokensPerDay: 200000, overBudget: refuse, requestsPerMinute: 60}
      - {name: batch, tiers: [cpu], gpuWaitSeconds: 30}
    budgetStore: {prometheusUrl: "http://prometheus-operated.monitoring.svc:9090"}
"""


def router_yaml(*args: str) -> RouterConfig:
    objects = by_name(template("-f", values_file("aws", "gpu"), *args))
    config = objects[("ConfigMap", "demo-llm-router-config")]
    return RouterConfig.model_validate(yaml.safe_load(config["data"]["router.yaml"]))


def test_named_keys_and_the_budget_store_reach_the_router(tmp_path: Path) -> None:
    values = tmp_path / "keys.yaml"
    values.write_text(VALUES)
    keys = router_yaml("-f", str(values)).api_keys
    assert keys.env == "LLM_ROUTER_API_KEYS"
    assert [k.name for k in keys.keys] == ["team-a", "batch"]
    assert keys.keys[0].over_budget is OverBudget.REFUSE
    assert keys.keys[1].tiers == ("cpu",) and keys.keys[1].gpu_wait_seconds == 30
    assert keys.budget_store is not None
    assert keys.budget_store.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"


def test_without_them_router_yaml_is_as_before() -> None:
    keys = router_yaml().api_keys
    assert keys.keys == () and keys.budget_store is None


def test_a_typo_in_a_key_policy_fails_the_schema(tmp_path: Path) -> None:
    values = tmp_path / "typo.yaml"
    values.write_text(VALUES.replace("overBudget: refuse", "overbudget: refuse"))
    assert "overbudget" in template_error("-f", values_file("aws", "gpu"), "-f", str(values))
