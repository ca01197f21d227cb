"""`llmctl cost keys`: what each client key's use of the GPU cost over a window (issue 31). Pure.

The method (docs/cost.md, "Cost per key"):

1. GPU hours per cloud: the time at least one of the cloud's GPU backends answered the routers'
   health checks (`llm_router_backend_ready{tier="gpu"}`), which is when the scale-to-zero pool
   has a node up, one node assumed per cloud.
2. Priced with the cost model's catalog: the Stack config's GPU instance type and region for that
   cloud, spot or on-demand, GCP's separately billed GPU included (`PriceCatalog.node_hourly_usd`).
3. Split by each key's share of the GPU tokens served in the window
   (`llm_router_key_tokens_total{tier="gpu"}`, prompt plus completion): idle time (the pool's
   cooldown, the autoscaler's scale-down delay) is paid by the keys that woke it, in proportion.

The CPU tier runs all the time whoever uses it, so it is not split; its tokens are shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmctl.catalog import CloudName
from llmctl.cost.model import gcp_region_of
from llmctl.cost.prices import Capacity, PriceCatalog
from llmctl.errors import ConfigError

if TYPE_CHECKING:
    from llmctl.config import Stack


@dataclass(frozen=True)
class KeyTokens:
    key: str
    gpu_tokens: float
    cpu_tokens: float


@dataclass(frozen=True)
class GpuPrice:
    cloud: str
    hours: float
    instance_type: str
    region: str
    usd_per_hour: float

    @property
    def usd(self) -> float:
        return self.hours * self.usd_per_hour


@dataclass(frozen=True)
class KeyCost:
    key: str
    gpu_tokens: float
    cpu_tokens: float
    gpu_share: float  # of all GPU tokens in the window, 0..1
    gpu_usd: float


@dataclass(frozen=True)
class KeyCostReport:
    window_seconds: int
    rows: tuple[KeyCost, ...]
    gpu: tuple[GpuPrice, ...]
    gpu_usd: float
    unattributed_usd: float  # GPU time in a window where no key's GPU tokens were counted
    warnings: tuple[str, ...] = ()


def parse_window(text: str) -> int:
    """'24h', '90m', '7d', '3600s' (or a bare number of seconds) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(
            f"--since {text!r} is not a duration", hint="give a number and a unit: 24h, 90m, 7d"
        )
    return max(1, int(value * units[unit]))


def key_costs(
    window_seconds: int,
    tokens: list[KeyTokens],
    gpu: list[GpuPrice],
    warnings: tuple[str, ...] = (),
) -> KeyCostReport:
    total_gpu_tokens = sum(t.gpu_tokens for t in tokens)
    gpu_usd = sum(price.usd for price in gpu)
    rows = []
    for t in sorted(tokens, key=lambda t: (-t.gpu_tokens, -t.cpu_tokens, t.key)):
        share = t.gpu_tokens / total_gpu_tokens if total_gpu_tokens else 0.0
        rows.append(KeyCost(t.key, t.gpu_tokens, t.cpu_tokens, share, gpu_usd * share))
    unattributed = gpu_usd if total_gpu_tokens == 0 else 0.0
    return KeyCostReport(window_seconds, tuple(rows), tuple(gpu), gpu_usd, unattributed, warnings)


def to_data(report: KeyCostReport) -> dict[str, object]:
    """The `--output json` document (docs/cli.md's convention: camelCase, sums under totals)."""
    return {
        "windowSeconds": report.window_seconds,
        "rows": [
            {
                "key": row.key,
                "gpuTokens": row.gpu_tokens,
                "cpuTokens": row.cpu_tokens,
                "gpuShare": round(row.gpu_share, 6),
                "gpuUsd": round(row.gpu_usd, 6),
            }
            for row in report.rows
        ],
        "gpu": [
            {
                "cloud": price.cloud,
                "hours": round(price.hours, 6),
                "instanceType": price.instance_type,
                "region": price.region,
                "usdPerHour": price.usd_per_hour,
                "usd": round(price.usd, 6),
            }
            for price in report.gpu
        ],
        "totals": {
            "gpuTokens": sum(r.gpu_tokens for r in report.rows),
            "cpuTokens": sum(r.cpu_tokens for r in report.rows),
            "gpuUsd": round(report.gpu_usd, 6),
            "unattributedUsd": round(report.unattributed_usd, 6),
        },
        "warnings": list(report.warnings),
    }


def tokens_by_key(samples: Mapping[tuple[str, str], float]) -> list[KeyTokens]:
    """{(key, tier): tokens} as one KeyTokens per key."""
    keys = sorted({key for key, _ in samples})
    return [
        KeyTokens(key, samples.get((key, "gpu"), 0.0), samples.get((key, "cpu"), 0.0))
        for key in keys
    ]


def gpu_prices(
    stack: Stack, prices: PriceCatalog, hours: Mapping[str, float], capacity: Capacity
) -> tuple[list[GpuPrice], list[str]]:
    """Each cloud's GPU hours priced with the Stack's GPU instance type and region there."""
    priced: list[GpuPrice] = []
    warnings: list[str] = []
    for cloud_label, used in sorted(hours.items()):
        try:
            cloud = CloudName(cloud_label)
        except ValueError:
            warnings.append(
                f"GPU backends of cloud {cloud_label!r} were up {used:.2f} h but have no price "
                f"(clouds priced: {', '.join(c.value for c in CloudName)})"
            )
            continue
        instance_type = stack.gpu.instance_types.of(cloud)
        region = stack.clouds.of(cloud).region
        hourly = prices.node_hourly_usd(cloud, gcp_region_of(region), instance_type, capacity)
        priced.append(GpuPrice(cloud.value, used, instance_type, region, hourly))
    return priced, warnings
