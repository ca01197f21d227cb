"""The metrics text is valid Prometheus exposition with the shared names."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llmctl.router.metrics import RouterMetrics


def test_render_parses_with_prometheus_parser() -> None:
    m = RouterMetrics()
    m.requests.inc(("cpu-fallback", "aws", "llama-2-7b-chat", "200"))
    m.duration.observe(("gpu",), 0.3)
    m.duration.observe(("gpu",), 7.0)
    m.ttft.observe(("cpu",), 0.02)
    m.tier_demand.inc(("gpu", "aws"))
    m.tier_demand.inc(("gpu", "aws"))
    m.tier_demand.dec(("gpu", "aws"))
    m.tier_requests.inc(("gpu", "aws"))
    m.tier_requests.inc(("gpu", "aws"))
    m.tokens.inc(("cpu", "completion"), 12)
    m.fallbacks.inc(("gpu", "cpu", "no_ready_gpu"))
    m.cost.inc(("gpu", "aws"), 0.000125)
    m.gpu_waiting.inc(("aws",))
    m.gpu_waits.inc(("timeout",))
    m.gpu_wait_seconds.observe(("timeout",), 2.0)
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert set(families) == {
        "llm_router_requests",
        "llm_router_request_duration_seconds",
        "llm_router_time_to_first_token_seconds",
        "llm_router_tier_demand",
        "llm_router_tier_requests",
        "llm_router_tokens",
        "llm_router_fallbacks",
        "llm_router_cost_usd",
        "llm_router_gpu_waiting",
        "llm_router_gpu_waits",
        "llm_router_gpu_wait_seconds",
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("llm_router_tier_demand", (("cloud", "aws"), ("tier", "gpu")))] == 1
    assert samples[("llm_router_gpu_waiting", (("cloud", "aws"),))] == 1
    assert samples[("llm_router_gpu_waits_total", (("outcome", "timeout"),))] == 1
    assert samples[("llm_router_gpu_wait_seconds_count", (("outcome", "timeout"),))] == 1
    assert samples[("llm_router_tier_requests_total", (("cloud", "aws"), ("tier", "gpu")))] == 2
    assert samples[("llm_router_request_duration_seconds_count", (("tier", "gpu"),))] == 2
    assert (
        samples[("llm_router_request_duration_seconds_bucket", (("le", "0.5"), ("tier", "gpu")))]
        == 1
    )
    assert (
        samples[("llm_router_request_duration_seconds_bucket", (("le", "+Inf"), ("tier", "gpu")))]
        == 2
    )
    assert samples[("llm_router_request_duration_seconds_sum", (("tier", "gpu"),))] == 7.3
    assert samples[("llm_router_cost_usd_total", (("cloud", "aws"), ("tier", "gpu")))] == 0.000125
    assert (
        samples[
            (
                "llm_router_requests_total",
                (
                    ("cloud", "aws"),
                    ("code", "200"),
                    ("model", "llama-2-7b-chat"),
                    ("tier", "cpu-fallback"),
                ),
            )
        ]
        == 1
    )


def test_label_values_are_escaped() -> None:
    m = RouterMetrics()
    m.requests.inc(("cpu", "aws", 'we"ird\\model\n', "200"))
    family = next(
        f
        for f in text_string_to_metric_families(m.render().decode())
        if f.name == "llm_router_requests"
    )
    assert family.samples[0].labels["model"] == 'we"ird\\model\n'
