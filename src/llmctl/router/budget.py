"""Per-key GPU token budgets (issue 31), counted where every router replica can read them.

The counts live in Prometheus, which already scrapes every replica for KEDA. Each router process
exports `llm_router_key_tokens_total{key,tier,direction,replica}`, where `replica` is new at each
process start (so a series never resets), and every `refreshSeconds` each replica asks

    sum by (key, replica) ((max_over_time(T[<today>s]) - T offset <today>s)
                           or max_over_time(T[<today>s]))

(T: `llm_router_key_tokens_total{tier="gpu"}`), with the window from 00:00 UTC to now: what each
process served today, as last scraped (its total now, less its total at midnight if it ran then).
A key's use is the other processes' sum (earlier processes of this replica, before a restart,
included) plus this process's own count, exact and current. What a replica cannot see is what
the others served since Prometheus last scraped them: that lag (the scrape interval plus
`refreshSeconds`) is the overshoot, docs/router.md says how much. Nothing is written:
Prometheus is only read.

When Prometheus does not answer, a replica keeps its last read plus its own counts (and says so in
`llm_router_budget_store_up` and a log line): budgets fail open rather than refuse everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import urllib.parse
from collections.abc import Iterable

from llmctl.router.clients import ClientKey
from llmctl.router.key_config import BudgetStore
from llmctl.router.metrics import RouterMetrics
from llmctl.router.upstream import Pool, UpstreamError

log = logging.getLogger("llmctl.router")

GPU = "gpu"


def seconds_since_midnight(now: dt.datetime) -> int:
    return now.hour * 3600 + now.minute * 60 + now.second


def seconds_to_midnight(now: dt.datetime) -> int:
    """Retry-After for a spent budget: the day's counts start again at 00:00 UTC."""
    return max(1, 86_400 - seconds_since_midnight(now))


def gained_query(selector: str, window_s: int) -> str:
    """What each series gained in the last `window_s` seconds, summed by key and replica: its
    last value minus its value when the window began, or minus 0 for a series that began in
    the window (a router process's series starts at 0, and Prometheus may first scrape it after
    it counted its first tokens: `max - min` would lose those)."""
    series = f"{selector}[{window_s}s]"
    return (
        f"sum by (key, replica) ((max_over_time({series}) - {selector} offset {window_s}s) "
        f"or max_over_time({series}))"
    )


def day_query(store: BudgetStore, window_s: int) -> str:
    matchers = ",".join(m for m in (f'tier="{GPU}"', store.matchers.strip()) if m)
    return gained_query(f"llm_router_key_tokens_total{{{matchers}}}", window_s)


def parse_vector(body: bytes) -> dict[tuple[str, str], float]:
    """Prometheus' instant-query answer (a vector by `key` and `replica`) as a dict."""
    data = json.loads(body)
    if data.get("status") != "success":
        raise ValueError(f"Prometheus answered {data.get('errorType')}: {data.get('error')}")
    result = data["data"]["result"]
    return {
        (str(sample["metric"].get("key", "")), str(sample["metric"].get("replica", ""))): float(
            sample["value"][1]
        )
        for sample in result
    }


class GpuBudgets:
    """The day's GPU tokens per key, as the replicas together spent them."""

    def __init__(
        self, store: BudgetStore, keys: Iterable[ClientKey], metrics: RouterMetrics
    ) -> None:
        self.store, self.metrics = store, metrics
        self.limits = {
            k.name: k.policy.gpu_tokens_per_day
            for k in keys
            if k.policy is not None and k.policy.gpu_tokens_per_day is not None
        }
        self.pool = Pool(store.prometheus_url)
        self.at_midnight: dict[str, float] = {}
        # The other router processes' GPU tokens today, per key, at the last read.
        self.others: dict[str, float] = {}
        self.day: dt.date | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def local(self, name: str) -> float:
        """This process's GPU tokens for the key (it started today or is counted from 0 at
        midnight by the read, see `used`)."""
        tokens, me = self.metrics.key_tokens, self.metrics.replica
        return tokens.get((name, GPU, "prompt", me)) + tokens.get((name, GPU, "completion", me))

    def used(self, name: str, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        others = self.others.get(name, 0.0) if self.day == now.date() else 0.0
        return others + self.local(name) - self.at_midnight.get(name, 0.0)

    def spent(self, name: str) -> bool:
        limit = self.limits.get(name)
        return limit is not None and self.used(name) >= limit

    async def refresh(self) -> None:
        now = dt.datetime.now(dt.UTC)
        if self.day is not None and self.day != now.date():
            # A process that runs past midnight counts its day from its total at the first
            # read of the new day (a refresh interval's tokens may fall on the wrong day).
            self.at_midnight = {name: self.local(name) for name in self.limits}
        window = seconds_since_midnight(now)
        others: dict[str, float] = {}
        if window >= 1:
            query = urllib.parse.urlencode({"query": day_query(self.store, window)})
            path = f"{self.pool.prefix}/api/v1/query?{query}".encode()
            response = await self.pool.get(path, self.store.timeout_seconds)
            try:
                body = await response.read()
            finally:
                response.release()
            if response.status != 200:
                raise ValueError(f"Prometheus answered {response.status}: {body[:200]!r}")
            for (key, replica), value in parse_vector(body).items():
                if replica != self.metrics.replica:
                    others[key] = others.get(key, 0.0) + value
        self.others, self.day = others, now.date()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except (OSError, UpstreamError, ValueError, KeyError, TimeoutError) as exc:
            self.metrics.budget_store_up.values[()] = 0.0
            if not self._failing:
                log.warning(
                    "could not read the day's GPU token counts from %s: %s; budgets go on "
                    "from the last read plus this replica's own counts",
                    self.store.prometheus_url,
                    exc,
                )
            self._failing = True
            return
        self.metrics.budget_store_up.values[()] = 1.0
        if self._failing:
            log.info("reading GPU token counts from %s again", self.store.prometheus_url)
        self._failing = False

    async def start(self) -> None:
        """A first read (a restarted replica knows the day's spend before it serves), then the
        loop."""
        await self._refresh_logged()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.store.refresh_seconds)
            await self._refresh_logged()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.pool.close()
