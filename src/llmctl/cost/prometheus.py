"""An adapter: the router metrics `llmctl cost keys` reads, from Prometheus' HTTP API
(`GET /api/v1/query`, an instant query; the standard library's urllib, no client library).

The token query takes what each series gained in the window as its last value less its value at
the window's start (0 for a series that began in the window): a router process's
`llm_router_key_tokens_total` series never resets (its `replica` label is new at each start), so
nothing is extrapolated, as `increase()` would.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from llmctl.errors import LlmctlError


class PrometheusError(LlmctlError):
    """Prometheus could not be read (exit 1)."""


def tokens_query(window_s: int, matchers: str = "") -> str:
    """Each series' last value less its value when the window began (0 for a series that began
    in it: a router process counts from 0), summed by key and tier."""
    selector = f"llm_router_key_tokens_total{{{matchers}}}"
    series = f"{selector}[{window_s}s]"
    return (
        f"sum by (key, tier) ((max_over_time({series}) - {selector} offset {window_s}s) "
        f"or max_over_time({series}))"
    )


def gpu_hours_query(window_s: int, step_s: int, matchers: str = "") -> str:
    """Hours in the window with at least one ready GPU backend, per cloud: the number of
    `step_s` steps at which the max over the routers' reports was 1, times the step."""
    labels = ",".join(m for m in ('tier="gpu"', matchers) if m)
    ready = f"max by (cloud) (llm_router_backend_ready{{{labels}}})"
    return f"sum_over_time({ready}[{window_s}s:{step_s}s]) * {step_s} / 3600"


def step_for(window_s: int) -> int:
    """The sub-query's resolution: about 1,440 points over the window, at least 1 s."""
    return max(1, window_s // 1440)


def instant(url: str, query: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    address = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise PrometheusError(
            f"Prometheus at {url} answered {exc.code} to the query: {detail}",
            hint="check --prometheus points at Prometheus itself (its /api/v1/query)",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(
            f"could not read Prometheus at {url}: {reason}",
            hint="check the URL; in a cluster: kubectl port-forward svc/<prometheus> 9090",
        ) from None
    if body.get("status") != "success" or body["data"]["resultType"] != "vector":
        raise PrometheusError(f"Prometheus at {url} answered {body.get('error') or body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def read_usage(
    url: str, window_s: int, matchers: str = ""
) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """({(key, tier): tokens}, {cloud: GPU hours}) over the last `window_s` seconds."""
    tokens: dict[tuple[str, str], float] = {}
    for sample in instant(url, tokens_query(window_s, matchers)):
        labels = sample["metric"]
        tokens[(labels.get("key", ""), labels.get("tier", ""))] = float(sample["value"][1])
    hours: dict[str, float] = {}
    for sample in instant(url, gpu_hours_query(window_s, step_for(window_s), matchers)):
        hours[sample["metric"].get("cloud", "")] = float(sample["value"][1])
    return tokens, hours
