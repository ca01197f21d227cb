"""router.gpuWait and the named API keys (router.apiKeys.keys, .budgetStore) mean the same in
llmctl.yaml, in the Helm chart's values and in the router's own router.yaml.

The Stack and router.yaml share their classes (config/router_settings.py); the chart has its own
values schema and template checks. Each case below is given, under the same names, to all three:
`load_stack`, `helm template` and the router's loader (`llmctl router serve`'s read_config). They
must all accept it or all refuse it, and where accepted, the router reads the same settings from
the ConfigMap `render` writes as from the one the chart writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from llmctl.catalog import CloudName
from llmctl.config import BudgetStore, GpuWait, KeyPolicy, load_stack
from llmctl.errors import ConfigError
from llmctl.manifests.build import built_objects
from llmctl.manifests.routing import ROUTER_API_KEYS_ENV
from llmctl.router.key_config import ApiKeys
from llmctl.router.serve import ServeError, read_config
from llmctl.router.table import RouterConfig
from tests.charts.helm import CHART, NAMESPACE, RELEASE, by_name, run_helm, template, values_file

PROM = "http://prometheus-operated.monitoring.svc:9090"
KEYS = {"secretName": "router-keys"}

# (id, router settings, accepted). The same dict is `router:` of llmctl.yaml and of the values.
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("defaults", {}, True),
    ("gpuWait: all set", {"gpuWait": {"defaultSeconds": 45, "maxSeconds": 900, "maxDepth": 8,
                                      "onGiveUp": "reject", "retryAfterSeconds": 60}}, True),
    ("gpuWait: a fraction of a second", {"gpuWait": {"maxSeconds": 0.5}}, True),
    ("gpuWait: default equal to the cap", {"gpuWait": {"defaultSeconds": 120}}, True),
    ("named keys: every field", {"apiKeys": {**KEYS, "keys": [
        {"name": "team-a", "tiers": ["gpu"], "gpuTokensPerDay": 0, "overBudget": "refuse",
         "requestsPerMinute": 0.5, "gpuWaitSeconds": 30},
        {"name": "batch.v2_x", "tiers": ["cpu"]},
    ], "budgetStore": {"prometheusUrl": PROM, "refreshSeconds": 1, "matchers":
                       'namespace="llm-server"', "timeoutSeconds": 0.5}}}, True),
    ("named keys without budgets", {"apiKeys": {**KEYS, "keys": [{"name": "a"}]}}, True),
    ("a store without budgets", {"apiKeys": {**KEYS, "budgetStore": {"prometheusUrl": PROM}}},
     True),
    ("gpuWait: negative default", {"gpuWait": {"defaultSeconds": -1}}, False),
    ("gpuWait: zero cap", {"gpuWait": {"maxSeconds": 0}}, False),
    ("gpuWait: default over the default cap", {"gpuWait": {"defaultSeconds": 121}}, False),
    ("gpuWait: default over its cap", {"gpuWait": {"defaultSeconds": 10, "maxSeconds": 5}},
     False),
    ("gpuWait: no depth", {"gpuWait": {"maxDepth": 0}}, False),
    ("gpuWait: fractional depth", {"gpuWait": {"maxDepth": 2.5}}, False),
    ("gpuWait: unknown give-up", {"gpuWait": {"onGiveUp": "queue"}}, False),
    ("gpuWait: zero Retry-After", {"gpuWait": {"retryAfterSeconds": 0}}, False),
    ("gpuWait: a typo", {"gpuWait": {"maxSecond": 10}}, False),
    ("keys without a Secret", {"apiKeys": {"keys": [{"name": "a"}]}}, False),
    ("budget without a store", {"apiKeys": {**KEYS, "keys": [
        {"name": "a", "gpuTokensPerDay": 10}]}}, False),
    ("repeated names", {"apiKeys": {**KEYS, "keys": [{"name": "a"}, {"name": "a"}]}}, False),
    ("a colon in a name", {"apiKeys": {**KEYS, "keys": [{"name": "a:b"}]}}, False),
    ("a name too long", {"apiKeys": {**KEYS, "keys": [{"name": "a" * 64}]}}, False),
    ("no tiers", {"apiKeys": {**KEYS, "keys": [{"name": "a", "tiers": []}]}}, False),
    ("an unknown tier", {"apiKeys": {**KEYS, "keys": [{"name": "a", "tiers": ["tpu"]}]}},
     False),
    ("an unknown overBudget", {"apiKeys": {**KEYS, "keys": [
        {"name": "a", "overBudget": "queue"}]}}, False),
    ("a zero rate", {"apiKeys": {**KEYS, "keys": [{"name": "a", "requestsPerMinute": 0}]}},
     False),
    ("a negative budget", {"apiKeys": {**KEYS, "keys": [
        {"name": "a", "gpuTokensPerDay": -1}], "budgetStore": {"prometheusUrl": PROM}}}, False),
    ("a negative key wait", {"apiKeys": {**KEYS, "keys": [
        {"name": "a", "gpuWaitSeconds": -1}]}}, False),
    ("a secret in a key", {"apiKeys": {**KEYS, "keys": [{"name": "a", "secret": "sk-1"}]}},
     False),
    ("an https store", {"apiKeys": {**KEYS, "budgetStore": {
        "prometheusUrl": "https://prometheus.example.com"}}}, False),
    ("a store that never refreshes", {"apiKeys": {**KEYS, "budgetStore": {
        "prometheusUrl": PROM, "refreshSeconds": 0}}}, False),
    ("a store with a typo", {"apiKeys": {**KEYS, "budgetStore": {
        "prometheusUrl": PROM, "refresh": 1}}}, False),
]  # fmt: skip


def _stack(tmp_path: Path, router: dict[str, Any]) -> Any:
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump({"router": router}))
    try:
        return load_stack(config_file=path, env={}).stack
    except ConfigError:
        return None


def _chart_router_yaml(tmp_path: Path, values: dict[str, Any]) -> dict[str, Any] | None:
    """The chart's router.yaml for these values over values-aws-gpu.yaml; None if helm refuses."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    args = ("template", RELEASE, str(CHART), "--namespace", NAMESPACE)
    result = run_helm(*args, "-f", values_file("aws", "gpu"), "-f", str(path))
    if result.returncode != 0:
        return None
    objects = by_name([d for d in yaml.safe_load_all(result.stdout) if d])
    text = objects[("ConfigMap", f"{RELEASE}-llm-router-config")]["data"]["router.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _router_loads(
    tmp_path: Path, table: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> RouterConfig | None:
    """The router's own loader on this router.yaml, with the Secret's value in its variable
    (an entry `name:secret` for each named key, as the docs say to write it)."""
    names = [k.get("name") for k in table.get("apiKeys", {}).get("keys") or []]
    entries = [f"{n}:sk-{i}" for i, n in enumerate(names)] if names else ["sk-plain"]
    monkeypatch.setenv(ROUTER_API_KEYS_ENV, ",".join(str(e) for e in entries))
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(table))
    try:
        return read_config(path)
    except ServeError:
        return None


def _as_router_yaml(router: dict[str, Any]) -> dict[str, Any]:
    """The settings as router.yaml spells them (what render writes from a Stack), taken over
    the default rendered table: apiKeys.env for the Secret, the rest as it is."""
    stack = load_stack(env={}).stack
    objects = by_name(built_objects(stack, CloudName.AWS, gpu=True))
    table: dict[str, Any] = yaml.safe_load(
        objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"]
    )
    keys = dict(router.get("apiKeys", {}))
    secret = keys.pop("secretName", None)
    keys.pop("key", None)
    table["apiKeys"] = {"env": ROUTER_API_KEYS_ENV if secret else None, **keys}
    if "gpuWait" in router:
        table["gpuWait"] = router["gpuWait"]
    return table


def _settings(table: RouterConfig) -> tuple[object, ...]:
    keys = table.api_keys
    return (keys.env is not None, keys.keys, keys.budget_store, table.gpu_wait)


@pytest.mark.parametrize(("router", "accepted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_llmctl_yaml_the_chart_and_the_router_accept_and_refuse_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, router: dict[str, Any], accepted: bool
) -> None:
    stack = _stack(tmp_path, router)
    chart = _chart_router_yaml(tmp_path, {"router": router})
    loaded = _router_loads(tmp_path, _as_router_yaml(router), monkeypatch)
    verdicts = {"llmctl.yaml": stack is not None, "chart": chart is not None,
                "router.yaml": loaded is not None}  # fmt: skip
    assert verdicts == dict.fromkeys(verdicts, accepted)
    if not accepted:
        return
    assert chart is not None and loaded is not None
    # What render writes from llmctl.yaml, the router loads as given.
    objects = by_name(built_objects(stack, CloudName.AWS, gpu=True))
    rendered = yaml.safe_load(objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"])
    from_render = _router_loads(tmp_path, rendered, monkeypatch)
    from_chart = _router_loads(tmp_path, chart, monkeypatch)
    assert from_render is not None and from_chart is not None
    # The same settings typed into llmctl.yaml or into the values: the same router.
    assert _settings(from_render) == _settings(from_chart) == _settings(loaded)


def test_the_router_and_the_stack_share_their_classes() -> None:
    """The design that keeps them from drifting: one definition, not two kept in step."""
    from llmctl.config import ApiKeySecret, Router

    assert RouterConfig.model_fields["gpu_wait"].annotation is GpuWait
    assert Router.model_fields["gpu_wait"].annotation is GpuWait
    assert ApiKeys.model_fields["keys"].annotation == ApiKeySecret.model_fields["keys"].annotation
    assert ApiKeySecret.model_fields["keys"].annotation == tuple[KeyPolicy, ...]
    assert ApiKeys.model_fields["budget_store"].annotation == BudgetStore | None
    assert ApiKeySecret.model_fields["budget_store"].annotation == BudgetStore | None


def test_the_charts_values_schema_has_the_routers_fields_and_bounds() -> None:
    """values.schema.json spells each field with the bounds pydantic gives the shared class."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    router = schema["properties"]["router"]["properties"]
    chart_of: dict[type[BaseModel], dict[str, Any]] = {
        GpuWait: router["gpuWait"],
        KeyPolicy: router["apiKeys"]["properties"]["keys"]["items"],
        BudgetStore: router["apiKeys"]["properties"]["budgetStore"],
    }
    bounds = ("minimum", "exclusiveMinimum", "maximum", "pattern", "enum")
    for model, chart in chart_of.items():
        ours = model.model_json_schema(by_alias=True)
        assert sorted(chart["properties"]) == sorted(ours["properties"]), model.__name__
        assert chart.get("required", []) == ours.get("required", []), model.__name__
        for name, field in ours["properties"].items():
            field = next((f for f in field.get("anyOf", []) if f.get("type") != "null"), field)
            if "$ref" in field:
                field = ours["$defs"][field["$ref"].rsplit("/", 1)[1]]
            theirs = chart["properties"][name]
            for bound in bounds:
                assert theirs.get(bound) == field.get(bound), f"{model.__name__}.{name} {bound}"
            if "enum" not in field and field.get("type") in ("integer", "number", "string"):
                assert theirs["type"] == field["type"], f"{model.__name__}.{name}"


def test_an_invalid_shared_setting_fails_where_the_router_would() -> None:
    """The shared classes refuse on their own, with the router's message."""
    with pytest.raises(ValidationError, match="defaultSeconds must not be longer than maxSeconds"):
        GpuWait.model_validate({"defaultSeconds": 5, "maxSeconds": 1})


def test_no_secret_reaches_the_rendered_files(tmp_path: Path) -> None:
    """render writes the Secret's name (the pod's secretKeyRef) and the keys' names, never a
    secret: the Stack has no place for one (test_config), and the router reads them from its
    environment. Both paths name the same Secret key."""
    router = {"apiKeys": {"secretName": "router-keys", "key": "entries",
                          "keys": [{"name": "team-a"}]}}  # fmt: skip
    stack = _stack(tmp_path, router)
    objects = by_name(built_objects(stack, CloudName.AWS, gpu=True))
    env = objects[("Deployment", "llm-router")]["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = {"secretKeyRef": {"name": "router-keys", "key": "entries"}}
    assert {"name": ROUTER_API_KEYS_ENV, "valueFrom": ref} in env
    table = yaml.safe_load(objects[("ConfigMap", "llm-router-config")]["data"]["router.yaml"])
    assert table["apiKeys"] == {"file": None, "env": ROUTER_API_KEYS_ENV,
                                "keys": [{"name": "team-a"}]}  # fmt: skip
    values = tmp_path / "keys.yaml"
    values.write_text(yaml.safe_dump({"router": router}))
    chart = by_name(template("-f", values_file("aws", "gpu"), "-f", str(values)))
    chart_env = chart[("Deployment", f"{RELEASE}-llm-router")]["spec"]["template"]["spec"]
    assert {"name": ROUTER_API_KEYS_ENV, "valueFrom": ref} in chart_env["containers"][0]["env"]
