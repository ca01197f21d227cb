"""The router's Prometheus metrics, with the names in DESIGN.md section 3.

Hand-rolled rather than prometheus_client: every proxied request updates five of these, and a
dict lookup plus an add is a few hundred nanoseconds where the client library's locks and label
objects cost microseconds. The text it renders is the Prometheus exposition format (0.0.4); a
test parses it with prometheus_client's own parser.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]

# The ladder both histograms share: request durations go on to minutes, the time to first token
# starts a step lower.
_BUCKET_LADDER: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
DURATION_BUCKETS: tuple[float, ...] = (*_BUCKET_LADDER, 60.0, 120.0, 300.0)
TTFT_BUCKETS: tuple[float, ...] = (0.001, *_BUCKET_LADDER)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: Labels, values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Counter:
    def __init__(self, name: str, help_text: str, labels: Labels) -> None:
        self.name, self.help, self.labels = name, help_text, labels
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, labels: Labels) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for values, total in sorted(self.values.items()):
            yield f"{self.name}{_label_text(self.labels, values)} {_number(total)}"


class Gauge(Counter):
    def dec(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) - amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for values, total in sorted(self.values.items()):
            yield f"{self.name}{_label_text(self.labels, values)} {_number(total)}"


class Histogram:
    def __init__(
        self, name: str, help_text: str, labels: Labels, buckets: tuple[float, ...]
    ) -> None:
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        # per label set: [count in each bucket (non-cumulative) ..., +Inf bucket], sum
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = ([0] * (len(self.buckets) + 1), [0.0])
            self.series[labels] = series
        series[0][bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def count(self, labels: Labels) -> int:
        series = self.series.get(labels)
        return sum(series[0]) if series else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for values, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                label = _label_text(self.labels, values, f'le="{le}"')
                yield f"{self.name}_bucket{label} {running}"
            yield f"{self.name}_sum{_label_text(self.labels, values)} {repr(total[0])}"
            yield f"{self.name}_count{_label_text(self.labels, values)} {running}"


class RouterMetrics:
    """The series the dashboards, alerts and the GPU autoscaler read."""

    def __init__(self) -> None:
        self.requests = Counter(
            "llm_router_requests_total",
            "Requests answered, by the tier and cloud that served them, the model and HTTP code.",
            ("tier", "cloud", "model", "code"),
        )
        self.duration = Histogram(
            "llm_router_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ("tier",),
            DURATION_BUCKETS,
        )
        self.ttft = Histogram(
            "llm_router_time_to_first_token_seconds",
            "Time from the request's arrival to the first body byte from the backend.",
            ("tier",),
            TTFT_BUCKETS,
        )
        self.tier_demand = Gauge(
            "llm_router_tier_demand",
            "Requests in flight or waiting that want this tier, including those served "
            "elsewhere as a fallback (the GPU pool's scale-from-zero signal).",
            ("tier", "cloud"),
        )
        # The gauge above is sampled at scrape time, so a request shorter than the scrape
        # interval can come and go unseen; this counter cannot miss one. KEDA wakes the GPU tier
        # on either.
        self.tier_requests = Counter(
            "llm_router_tier_requests_total",
            "Requests that wanted this tier, including those served elsewhere or refused.",
            ("tier", "cloud"),
        )
        self.tokens = Counter(
            "llm_router_tokens_total",
            "Tokens the backends reported, by tier and direction (prompt or completion).",
            ("tier", "direction"),
        )
        self.fallbacks = Counter(
            "llm_router_fallbacks_total",
            "Requests served by another tier than the one they wanted.",
            ("from_tier", "to_tier", "reason"),
        )
        self.cost = Counter(
            "llm_router_cost_usd_total",
            "Estimated dollars spent: the backend's hourly cost times the request's share of it.",
            ("tier", "cloud"),
        )

        # Waiting for a GPU (issue 31, router/gpu_wait.py).
        self.gpu_waiting = Gauge(
            "llm_router_gpu_waiting",
            "Requests waiting for a GPU now (x-llm-gpu-wait); they count in the demand too.",
            ("cloud",),
        )
        self.gpu_waits = Counter(
            "llm_router_gpu_waits_total",
            "Waits for a GPU that ended, by outcome (gpu, timeout, full, left, shutdown).",
            ("outcome",),
        )
        self.gpu_wait_seconds = Histogram(
            "llm_router_gpu_wait_seconds",
            "Time a request waited for a GPU, by outcome.",
            ("outcome",),
            DURATION_BUCKETS,
        )

    def all(self) -> tuple[Counter | Histogram, ...]:
        return (
            self.requests,
            self.duration,
            self.ttft,
            self.tier_demand,
            self.tier_requests,
            self.tokens,
            self.fallbacks,
            self.cost,
            self.gpu_waiting,
            self.gpu_waits,
            self.gpu_wait_seconds,
        )

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()
