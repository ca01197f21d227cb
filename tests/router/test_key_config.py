"""Named keys and their policies (issue 31): reading them, the plain list as before, the errors,
the rate limit's bucket, the tier rule with a key's tiers, the budget's query."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmctl.router import policy
from llmctl.router.budget import day_query, parse_vector, seconds_to_midnight
from llmctl.router.clients import RateLimiter, identify, load_client_keys
from llmctl.router.key_config import ApiKeys, BudgetStore
from llmctl.router.policy import Refusal, Route, Served
from tests.router.fakes import POLICY, TINY, cpu, gpu


def keys(monkeypatch: pytest.MonkeyPatch, value: str, **config: object) -> ApiKeys:
    monkeypatch.setenv("TEST_KEYS", value)
    return ApiKeys.model_validate({"env": "TEST_KEYS", **config})


def test_a_plain_list_reads_as_before_with_the_name_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = load_client_keys(keys(monkeypatch, "sk-one,sk:two"))
    assert [(k.name, k.secret, k.policy) for k in read] == [
        ("default", b"sk-one", None),
        ("default", b"sk:two", None),  # a colon in a plain key is part of the key
    ]


def test_named_keys_carry_their_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = keys(
        monkeypatch,
        "team-a:sk-a:with-colon,batch:sk-b",
        keys=[{"name": "team-a", "gpuTokensPerDay": 10}, {"name": "batch", "tiers": ["cpu"]}],
        budgetStore={"prometheusUrl": "http://prometheus:9090"},
    )
    read = load_client_keys(settings)
    assert [(k.name, k.secret) for k in read] == [
        ("team-a", b"sk-a:with-colon"),
        ("batch", b"sk-b"),
    ]
    assert read[0].policy is not None and read[0].policy.gpu_tokens_per_day == 10
    assert read[1].policy is not None and read[1].policy.tiers == ("cpu",)
    found = identify({"authorization": "Bearer sk-b"}, read)
    assert found is not None and found.name == "batch"
    assert identify({"authorization": "Bearer sk-c"}, read) is None
    assert "sk-a" not in repr(read[0])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sk-plain", "entry 1 in $TEST_KEYS is not 'name:secret'"),
        ("team-a:", "entry 1 in $TEST_KEYS is not 'name:secret'"),
        ("team-b:sk-x", "names key 'team-b', which apiKeys.keys does not list (known: team-a)"),
    ],
)
def test_named_entries_that_do_not_fit_name_the_entry_not_the_secret(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=r"^apiKeys: ") as caught:
        load_client_keys(keys(monkeypatch, value, keys=[{"name": "team-a"}]))
    assert message in str(caught.value)
    assert "sk-" not in str(caught.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"keys": [{"name": "a", "gpuTokensPerDay": 5}]}, "needs apiKeys.budgetStore"),
        ({"keys": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"keys": [{"name": "a", "tiers": ["tpu"]}]}, "tiers must be a non-empty list"),
        ({"keys": [{"name": "a:b"}]}, "should match pattern"),
        ({"keys": [{"name": "a", "overBudget": "queue"}]}, "'cpu' or 'refuse'"),
    ],
)
def test_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ApiKeys.model_validate({"env": "X", **config})


def test_named_keys_need_somewhere_to_read_secrets_from() -> None:
    with pytest.raises(ValidationError, match="named keys need apiKeys.file or apiKeys.env"):
        ApiKeys.model_validate({"keys": [{"name": "a"}]})


def test_router_serve_says_the_rules_hint_too(tmp_path: Path) -> None:
    """A rule shared with llmctl.yaml (config/router_settings.py) gives `router serve` the same
    hint as `llmctl render`."""
    from llmctl.router.serve import ServeError, read_config

    path = tmp_path / "router.yaml"
    path.write_text(
        "cloud: aws\nmodels: [{name: m, parameters: 1}]\nbackends: []\n"
        "policy: {fallbackModel: m}\ngpuWait: {defaultSeconds: 10, maxSeconds: 5}\n"
    )
    with pytest.raises(ServeError) as caught:
        read_config(path)
    assert "gpuWait: gpuWait.defaultSeconds must not be longer than maxSeconds" in str(caught.value)
    assert caught.value.hint == (
        "raise gpuWait.maxSeconds to at least 10, or lower gpuWait.defaultSeconds"
    )


def test_named_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\nteam-a:sk-a\n\n")
    read = load_client_keys(ApiKeys(file=str(path), keys=({"name": "team-a"},)))  # type: ignore[arg-type]
    assert [(k.name, k.secret) for k in read] == [("team-a", b"sk-a")]


def test_rate_limiter_bucket() -> None:
    limiter = RateLimiter()
    assert limiter.take("k", 2, now=0.0) is None
    assert limiter.take("k", 2, now=0.0) is None
    assert limiter.take("k", 2, now=0.0) == 30  # one request every 30 s
    assert limiter.take("other", 2, now=0.0) is None  # per key
    assert limiter.take("k", 2, now=29.0) == 1
    assert limiter.take("k", 2, now=30.0) is None


def test_a_key_without_the_gpu_is_served_by_cpu_and_never_falls_back_to_gpu() -> None:
    route = policy.plan_route(TINY, "reasoning", False, [cpu(), gpu()], POLICY, allow_gpu=False)
    assert isinstance(route, Route)
    assert (route.served, route.fallback_reason) == (Served.CPU_FALLBACK, "gpu_not_allowed")
    # Plain chat with no CPU ready: today a GPU would answer; not for this key.
    refusal = policy.plan_route(
        TINY, "chat", False, [cpu(ready=False), gpu()], POLICY, allow_gpu=False
    )
    assert isinstance(refusal, Refusal)


def test_a_gpu_only_key_goes_to_the_gpu_and_is_refused_without_one() -> None:
    route = policy.plan_route(TINY, "chat", False, [cpu(), gpu()], POLICY, allow_cpu=False)
    assert isinstance(route, Route) and route.served == Served.GPU
    refusal = policy.plan_route(
        TINY, "chat", False, [cpu(), gpu(ready=False)], POLICY, allow_cpu=False
    )
    assert isinstance(refusal, Refusal)
    assert "its API key may use only the GPU tier" in refusal.message


def test_budget_query_and_answer() -> None:
    store = BudgetStore(prometheusUrl="http://p:9090", matchers='namespace="llm-server"')
    series = 'llm_router_key_tokens_total{tier="gpu",namespace="llm-server"}'
    assert day_query(store, 3600) == (
        f"sum by (key, replica) ((max_over_time({series}[3600s]) - {series} offset 3600s)"
        f" or max_over_time({series}[3600s]))"
    )
    body = (
        b'{"status":"success","data":{"resultType":"vector","result":['
        b'{"metric":{"key":"a","replica":"r1"},"value":[1,"12"]}]}}'
    )
    assert parse_vector(body) == {("a", "r1"): 12.0}
    with pytest.raises(ValueError, match="bad_data"):
        parse_vector(b'{"status":"error","errorType":"bad_data","error":"parse error"}')
    assert seconds_to_midnight(dt.datetime(2026, 12, 7, 23, 59, 30, tzinfo=dt.UTC)) == 30
