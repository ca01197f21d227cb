"""The chart carries named keys and the budgets' store into router.yaml (issue 31)."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmctl.router.key_config import OverBudget
from llmctl.router.table import GiveUp, RouterConfig
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


def test_gpu_wait_reaches_the_router_only_when_set(tmp_path: Path) -> None:
    """router.gpuWait (issue 31): written as given, the router's defaults for the rest; {} (the
    default) leaves router.yaml as it was, as `llmctl render` does."""
    values = tmp_path / "wait.yaml"
    values.write_text(
        "router:\n  gpuWait: {defaultSeconds: 45, maxSeconds: 600, onGiveUp: reject}\n"
    )
    wait = router_yaml("-f", str(values)).gpu_wait
    assert (wait.default_seconds, wait.max_seconds, wait.on_give_up) == (45, 600, GiveUp.REJECT)
    assert (wait.max_depth, wait.retry_after_seconds) == (64, 30)
    objects = by_name(template("-f", values_file("aws", "gpu")))
    assert "gpuWait" not in objects[("ConfigMap", "demo-llm-router-config")]["data"]["router.yaml"]


def test_what_the_router_would_refuse_at_start_fails_the_release(tmp_path: Path) -> None:
    """The rules across fields, which the values schema cannot say, fail `helm template` with
    the router's own sentence instead of a router that crash-loops."""
    values = tmp_path / "bad.yaml"
    cases = {
        "router:\n  apiKeys:\n    keys: [{name: a}]\n": "named keys need router.apiKeys.secretName",
        "router:\n  apiKeys:\n    secretName: k\n    keys: [{name: a, gpuTokensPerDay: 1}]\n": (
            "gpuTokensPerDay (keys a) needs router.apiKeys.budgetStore.prometheusUrl"
        ),
        "router:\n  apiKeys:\n    secretName: k\n    keys: [{name: a}, {name: a}]\n": (
            "key names must be unique; repeated: a"
        ),
        "router:\n  gpuWait: {defaultSeconds: 300}\n": (
            "gpuWait.defaultSeconds must not be longer than maxSeconds (300 > 120)"
        ),
    }
    for text, message in cases.items():
        values.write_text(text)
        assert message in template_error("-f", str(values)), text


def test_a_typo_in_a_key_policy_fails_the_schema(tmp_path: Path) -> None:
    values = tmp_path / "typo.yaml"
    values.write_text(VALUES.replace("overBudget: refuse", "overbudget: refuse"))
    assert "overbudget" in template_error("-f", values_file("aws", "gpu"), "-f", str(values))
