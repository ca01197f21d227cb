"""Waiting for a GPU instead of falling back to CPU (issue 31, docs/router.md "Waiting for a GPU").

A request that wants the GPU tier while no GPU is ready (here or at a peer) is served by the CPU
fallback at once, unless it asks to wait: `x-llm-gpu-wait: <seconds>` (or the config's
`gpuWait.defaultSeconds`). A waiting request already counts in `llm_router_tier_demand` and
`llm_router_tier_requests_total` (the app counts it on arrival, before it waits), so KEDA wakes
the GPU pool on the first one. Waiters sit in one bounded queue: at most `maxDepth` at once, each
for at most `maxSeconds`. When a GPU becomes ready, every waiter looks again, oldest first, and
goes on without yielding to the event loop until it holds its place in the backend's own slot
queue, so arrival order carries over. A client that goes away cancels its task: its place is
freed in the `finally` below, at once.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from enum import StrEnum

from llmctl.router.errors import invalid
from llmctl.router.table import GpuWait

HEADER = "x-llm-gpu-wait"


class Outcome(StrEnum):
    """How a wait ended (the `outcome` label of llm_router_gpu_waits_total)."""

    GPU = "gpu"  # a GPU became ready, here or at a peer
    TIMEOUT = "timeout"  # the request's wait ran out
    FULL = "full"  # maxDepth requests were already waiting
    LEFT = "left"  # the client went away
    SHUTDOWN = "shutdown"  # the router began to drain


def wait_seconds(
    headers: Mapping[str, str], settings: GpuWait, key_default: float | None = None
) -> float:
    """How long a request may wait for a GPU: its `x-llm-gpu-wait` header, else `key_default`
    (the per-key policy's default, when the request's API key has one), else
    `gpuWait.defaultSeconds`; capped at `gpuWait.maxSeconds`. A header that is not a
    non-negative number of seconds is a 400."""
    raw = headers.get(HEADER, "").strip()
    if not raw:
        seconds = settings.default_seconds if key_default is None else key_default
    else:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not math.isfinite(seconds) or seconds < 0:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise invalid(
                f"{HEADER} must be a number of seconds (0 or more), not {shown!r}; "
                f"the router caps it at {settings.max_seconds:g}",
                HEADER,
            )
    return min(seconds, settings.max_seconds)


class GpuWaitQueue:
    """The requests waiting for a GPU, oldest first (module docstring)."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0  # requests waiting now: the bound, and llm_router_gpu_waiting
        self.closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def busy(self) -> bool:
        return self.depth > 0

    def wake(self) -> None:
        """Something changed (a GPU backend became ready, a peer was read): every waiter looks
        again, oldest first (futures resolved in this order run their tasks in this order)."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """The router drains: nobody waits any more (they take the give-up answer)."""
        self.closed = True
        self.wake()

    async def wait(self, seconds: float, available: Callable[[], bool]) -> Outcome:
        """Until `available()` (a GPU can take the request) or `seconds` pass. Returns at once
        with FULL when maxDepth requests already wait. Cancelled (the client left), the place
        is given back before the CancelledError goes on."""
        if available():
            return Outcome.GPU
        if self.closed:
            return Outcome.SHUTDOWN
        if self.depth >= self.max_depth:
            return Outcome.FULL
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] | None = None
        self.depth += 1
        try:
            async with asyncio.timeout(seconds):
                while True:
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
                    if available():
                        return Outcome.GPU
                    if self.closed:
                        return Outcome.SHUTDOWN
        except TimeoutError:
            return Outcome.TIMEOUT
        finally:
            self.depth -= 1
            if waiter is not None and waiter in self._waiters:
                self._waiters.remove(waiter)  # cancelled: not left behind for the next wake
