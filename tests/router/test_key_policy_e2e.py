"""Per-key policy end to end (issue 31): two real router processes in front of real llama.cpp
servers, sharing their GPU token budgets through a real Prometheus that scrapes both, and a
restart of the replica that spent them.

Topology: one CPU backend (tinyllama) and one "GPU" backend (a second llama-server labelled gpu),
both loading a tiny random-weight GGUF; routers A and B with the same named keys; Prometheus
scraping A and B every 0.5 s.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.prometheus import Prometheus
from tests.support.gguf_models import write_llama_gguf
from tests.support.llama import LlamaServer
from tests.support.router import CPU_MODEL, GPU_MODEL, RouterProcess, router_config, two_models
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

SECRETS = {
    "strict": "sk-strict-0123",
    "team": "sk-team-4567",
    "cpuonly": "sk-cpu-89ab",
    "limited": "sk-limited-cdef",
}
KEYS = [
    {"name": "strict", "gpuTokensPerDay": 1, "overBudget": "refuse"},
    {"name": "team", "gpuTokensPerDay": 1, "overBudget": "cpu"},
    {"name": "cpuonly", "tiers": ["cpu"]},
    {"name": "limited", "requestsPerMinute": 2},
]
GPU_ASK = {"x-llm-complexity": "reasoning"}


class Replicas:
    def __init__(self, a: RouterProcess, b: RouterProcess, prometheus: Prometheus) -> None:
        self.a, self.b, self.prometheus = a, b, prometheus

    @staticmethod
    def post(
        router: RouterProcess, key: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.post(
            router.url + "/v1/chat/completions",
            json={
                "model": CPU_MODEL,
                "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 4,
            },
            headers={"authorization": f"Bearer {SECRETS[key]}", **(headers or {})},
            timeout=60,
        )


def metric(router: RouterProcess, name: str, **labels: str) -> float:
    """The sum of the router's samples of `name` that have these labels."""
    text = httpx.get(router.url + "/metrics", timeout=10).text
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("key-policy")
    gguf = write_llama_gguf(tmp / "tiny.gguf")
    cpu, gpu = LlamaServer(gguf, CPU_MODEL, tmp), LlamaServer(gguf, GPU_MODEL, tmp)
    routers: list[RouterProcess] = []
    prometheus: Prometheus | None = None
    try:
        cpu.start()
        gpu.start()
        backends: list[dict[str, Any]] = [
            {"name": "aws/cpu", "url": cpu.url, "tier": "cpu", "cloud": "aws",
             "model": CPU_MODEL, "slots": 2},
            {"name": "aws/gpu", "url": gpu.url, "tier": "gpu", "cloud": "aws",
             "model": GPU_MODEL, "slots": 2},
        ]  # fmt: skip
        # Both ports are chosen before either process starts: Prometheus scrapes the routers,
        # the routers read their budgets from Prometheus.
        env = {"ROUTER_KEYS": ",".join(f"{n}:{s}" for n, s in SECRETS.items())}
        placeholder = router_config(backends, two_models(), CPU_MODEL)
        routers = [RouterProcess(placeholder, tmp, env=env) for _ in range(2)]
        prometheus = Prometheus(
            tmp, {f"router-{i}": f"127.0.0.1:{r.port}" for i, r in enumerate(routers)}, 0.5
        )
        config = router_config(
            backends,
            two_models(),
            CPU_MODEL,
            apiKeys={
                "env": "ROUTER_KEYS",
                "keys": KEYS,
                "budgetStore": {"prometheusUrl": prometheus.url, "refreshSeconds": 0.5},
            },
        )
        for router in routers:
            router.config = config
        prometheus.start()
        for router in routers:
            router.start()
        yield Replicas(routers[0], routers[1], prometheus)
    finally:
        for router in routers:
            router.stop()
        if prometheus is not None:
            prometheus.stop()
        cpu.stop()
        gpu.stop()


def test_refusing_budget_holds_across_replicas_and_a_restart(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    first = replicas.post(a, "strict", GPU_ASK)
    assert first.status_code == 200, first.text
    assert first.headers["x-llm-tier"] == "gpu"
    spent = metric(a, "llm_router_key_tokens_total", key="strict", tier="gpu")
    assert spent > 0
    # Replica A knows at once (its own counts).
    again = replicas.post(a, "strict", GPU_ASK)
    assert again.status_code == 429, again.text
    error = again.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "gpu_budget_exceeded")
    assert 1 <= int(again.headers["retry-after"]) <= 86_400
    # Replica B, once it has read Prometheus' sum of both replicas.
    wait_for(
        "replica B to read the spend from Prometheus",
        lambda: metric(b, "llm_router_key_gpu_tokens_today", key="strict") >= spent,
        30,
    )
    refused = replicas.post(b, "strict", GPU_ASK)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "gpu_budget_exceeded"
    # A request that wants the CPU is still served: the budget is for the GPU tier.
    chat = replicas.post(b, "strict")
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-llm-tier"] == "cpu"
    # A restart of the replica that spent it: its counter starts again at 0, and Prometheus'
    # increase() adds across the reset; the first request after the restart is refused.
    wait_for(
        "Prometheus to scrape the spend",
        lambda: (replicas.prometheus.query(
            'sum(llm_router_key_tokens_total{key="strict",tier="gpu"})'
        ) or 0) >= spent,
        30,
    )  # fmt: skip
    a.stop()
    a.start()
    assert metric(a, "llm_router_key_tokens_total", key="strict", tier="gpu") == 0
    after_restart = replicas.post(a, "strict", GPU_ASK)
    assert after_restart.status_code == 429, after_restart.text
    assert after_restart.json()["error"]["code"] == "gpu_budget_exceeded"


def test_spent_budget_sends_gpu_requests_to_cpu_when_configured(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    first = replicas.post(b, "team", GPU_ASK)
    assert first.status_code == 200, first.text
    assert first.headers["x-llm-tier"] == "gpu"
    spent = metric(b, "llm_router_key_tokens_total", key="team", tier="gpu")
    wait_for(
        "replica A to read the spend from Prometheus",
        lambda: metric(a, "llm_router_key_gpu_tokens_today", key="team") >= spent,
        30,
    )
    served = replicas.post(a, "team", GPU_ASK)
    assert served.status_code == 200, served.text
    assert served.headers["x-llm-tier"] == "cpu-fallback"
    assert metric(a, "llm_router_fallbacks_total", reason="gpu_budget_spent") >= 1
    assert metric(a, "llm_router_key_tokens_total", key="team", tier="cpu") > 0


def test_key_without_the_gpu_tier(replicas: Replicas) -> None:
    served = replicas.post(replicas.a, "cpuonly", GPU_ASK)
    assert served.status_code == 200, served.text
    assert served.headers["x-llm-tier"] == "cpu-fallback"
    refused = replicas.post(replicas.a, "cpuonly", {**GPU_ASK, "x-llm-require-tier": "gpu"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "tier_not_allowed")


def test_rate_limit_answers_429_with_retry_after(replicas: Replicas) -> None:
    answers = [replicas.post(replicas.b, "limited") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429], answers[-1].text
    error = answers[2].json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    # Two a minute: the next one is about 30 s away.
    assert 1 <= int(answers[2].headers["retry-after"]) <= 30


def test_metrics_name_keys_never_their_secrets(replicas: Replicas) -> None:
    text = httpx.get(replicas.a.url + "/metrics", timeout=10).text
    assert 'llm_router_key_tokens_total{key="cpuonly",tier="cpu",direction="prompt",' in text
    for secret in SECRETS.values():
        assert secret not in text


def test_cost_per_key_from_real_metrics_in_prometheus(replicas: Replicas) -> None:
    """`llmctl cost keys` over what Prometheus scraped from the two routers: the earlier tests
    sent GPU requests with `strict` and `team` (one before a restart) and CPU ones with others."""
    from typer.testing import CliRunner

    from llmctl.cli.main import app

    prometheus = replicas.prometheus
    per_key = 'sum by (key) (max_over_time(llm_router_key_tokens_total{tier="gpu"}[10m]))'

    def scraped() -> dict[str, float]:
        return {
            s["metric"]["key"]: float(s["value"][1]) for s in instant_vector(prometheus, per_key)
        }

    # Every token each live router counted, of either tier, is in Prometheus: each of its
    # series there has reached the process' own count (the CPU ones too, which `cpuTokens`
    # reads: waiting on the GPU ones alone left `cpuonly` at 0 now and then).
    live = {
        (f"127.0.0.1:{router.port}", key, tier): metric(
            router, "llm_router_key_tokens_total", key=key, tier=tier
        )
        for router in (replicas.a, replicas.b)
        for key in SECRETS
        for tier in ("gpu", "cpu")
    }

    def scraped_series() -> dict[tuple[str, str, str], float]:
        # Summed as metric() sums the process' samples (over the token kinds).
        query = "sum by (instance, key, tier) (max_over_time(llm_router_key_tokens_total[10m]))"
        return {
            (s["metric"]["instance"], s["metric"]["key"], s["metric"]["tier"]): float(s["value"][1])
            for s in instant_vector(prometheus, query)
        }

    wait_for(
        "Prometheus to scrape the routers' latest counts",
        lambda: all(scraped_series().get(series, 0.0) >= v for series, v in live.items()),
        30,
    )
    expected = scraped()
    runner = CliRunner()
    args = ["cost", "keys", "--prometheus", prometheus.url, "--since", "10m"]
    result = runner.invoke(app, [*args, "-o", "json"], env={"LLMCTL_CONFIG": ""})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == set(SECRETS)
    gpu_total = sum(expected.values())
    assert gpu_total > 0
    for key, row in rows.items():
        assert row["gpuTokens"] == pytest.approx(expected.get(key, 0.0))
        assert row["gpuShare"] == pytest.approx(expected.get(key, 0.0) / gpu_total, abs=1e-6)
        assert row["gpuUsd"] == pytest.approx(data["totals"]["gpuUsd"] * row["gpuShare"], abs=1e-6)
    assert rows["strict"]["gpuTokens"] > 0 and rows["cpuonly"]["gpuTokens"] == 0
    assert rows["cpuonly"]["cpuTokens"] > 0
    # The GPU backend was up the whole time the routers ran: some seconds, priced at the Stack's
    # default AWS GPU instance type, spot.
    (aws,) = data["gpu"]
    assert aws["cloud"] == "aws" and 0 < aws["hours"] <= 600 / 3600
    assert aws["usd"] == pytest.approx(aws["hours"] * aws["usdPerHour"], abs=1e-6)
    table = runner.invoke(app, args, env={"LLMCTL_CONFIG": "", "COLUMNS": "120"})
    assert table.exit_code == 0, table.output
    assert "GPU cost per API key" in table.stdout
    for key in SECRETS:
        assert key in table.stdout


def instant_vector(prometheus: Prometheus, query: str) -> list[dict[str, Any]]:
    url = prometheus.url + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
    return result


def test_a_keys_default_wait_holds_its_gpu_requests_until_the_gpu_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gpuWaitSeconds` (issue 31, through part 1's wait): the key that has it waits for the
    waking GPU with no header; another key falls back to the CPU at once."""
    from tests.router.test_gpu_wait import Call, Tiers, wait_until, waiting

    tiers = Tiers(tmp_path)
    monkeypatch.setenv("ROUTER_KEYS", "patient:sk-patient,hasty:sk-hasty")  # the router's env
    config = {
        "env": "ROUTER_KEYS",
        "keys": [{"name": "patient", "gpuWaitSeconds": 60}, {"name": "hasty"}],
    }
    router = tiers.router({"maxSeconds": 60, "maxDepth": 4}, apiKeys=config)
    try:
        patient = Call(router, {"authorization": "Bearer sk-patient"})
        wait_until("the patient key's request to wait", lambda: waiting(router) == 1)
        hasty = httpx.post(
            router.url + "/v1/chat/completions",
            json={"model": GPU_MODEL, "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 4},
            headers={"authorization": "Bearer sk-hasty"},
            timeout=60,
        )  # fmt: skip
        assert hasty.status_code == 200, hasty.text
        assert hasty.headers["x-llm-tier"] == "cpu-fallback"
        assert patient.response is None
        tiers.gpu.start()
        answer = patient.result()
        assert answer.status_code == 200, patient.content
        assert answer.headers["x-llm-tier"] == "gpu"
    finally:
        router.stop()
        tiers.stop()
