"""Live state of each backend: readiness from background health checks (with backoff), its
concurrency limited to its slots, and a queue with a deadline for the requests that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence

from llmctl.router.table import Backend, HealthCheck, Tier
from llmctl.router.upstream import Pool, UpstreamError

log = logging.getLogger("llmctl.router")

_PROCESSING = re.compile(rb"^llamacpp:requests_processing\s+([0-9.eE+]+)", re.MULTILINE)
_DEFERRED = re.compile(rb"^llamacpp:requests_deferred\s+([0-9.eE+]+)", re.MULTILINE)


class QueueTimeout(Exception):
    """A request waited for a slot past its deadline (answered 429 with Retry-After)."""


class BackendGone(Exception):
    """The backend a request waits on was marked not ready: choose another one."""


# A proxied failure wakes the health loop only if no check ran this recently.
_RECENT_CHECK_SECONDS = 1.0
# A request that wants a backend which is not ready wakes its health loop at most this often:
# a tier coming up from zero takes traffic about this soon after its pod is Ready, however far
# its backoff has grown, while a router nobody asks keeps the backoff.
WANTED_CHECK_SECONDS = 1.0


class BackendState:
    """One backend as the policy sees it (policy.BackendView) plus its slots and pool."""

    def __init__(self, config: Backend) -> None:
        self.config = config
        self.name = config.name
        self.tier: Tier = config.tier
        self.cloud = config.cloud
        self.model = config.model
        self.slots = config.slots
        self.cost_weight = config.cost_weight
        self.pool = Pool(config.url)
        self.ready = False
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        # Requests the backend itself reports busy or deferred (other routers send it work too).
        self.reported_busy = 0
        self.failures = 0
        self.wake_health = asyncio.Event()
        self.last_check_at = -1e9
        self._last_check_ok = False
        self._recheck_started_at = -1e9
        self._recheck: asyncio.Task[bool] | None = None
        # Called when the backend turns ready (the GPU wait queue looks again, issue 31).
        self.on_ready: Callable[[], None] | None = None

    @property
    def load(self) -> int:
        return max(self.in_flight, self.reported_busy) + len(self.waiters)

    # --- slots ---------------------------------------------------------------------------
    async def acquire(self, timeout: float) -> None:
        """Take a slot, waiting in FIFO order at most `timeout` seconds."""
        if self.in_flight < self.slots and not self.waiters:
            self.in_flight += 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        handle = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except BaseException:
            handle.cancel()
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # granted a slot just as we gave up: pass it on
            raise
        handle.cancel()

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self.in_flight -= 1

    def _evict_waiters(self) -> None:
        """Wake every request queued here: they go to another backend (issue 19, #7)."""
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BackendGone())

    # --- health ----------------------------------------------------------------------------
    def mark_failed(self, reason: str) -> None:
        """A proxied request could not connect: stop routing here until a check passes.

        Only the change from ready to not ready wakes the health loop, and only if no check
        ran in the last second: a burst of failures costs one check, not one backoff step
        each (which parked a recovered backend for a minute)."""
        if not self.ready:
            return
        log.warning("backend %s marked not ready: %s", self.name, reason)
        self.ready = False
        self.reported_busy = 0
        self._evict_waiters()
        if time.monotonic() - self.last_check_at > _RECENT_CHECK_SECONDS:
            self.wake_health.set()

    def wanted(self) -> bool:
        """A request wanted this backend while it was not ready (a tier scaled to zero, a
        pod starting): check it now instead of at the end of its backoff (up to
        `maxBackoffSeconds`, a minute by default, which held the first token of a cold
        start back long after the pod was Ready), unless a check ran in the last
        WANTED_CHECK_SECONDS. True when it woke the health loop."""
        if self.ready or time.monotonic() - self.last_check_at <= WANTED_CHECK_SECONDS:
            return False
        self.wake_health.set()
        return True

    async def recheck(self, timeout: float, sent_at: float) -> bool:
        """Is the backend alive after failing a request sent at `sent_at`? A re-check begun
        since then, for another request's failure, answers it too: a crash resets every
        request the backend holds at once, and one check serves them all. (A scheduled check
        begun since may have seen the backend alive just before it died: it does not count.)"""
        if self._recheck_started_at < sent_at:
            self._recheck_started_at = time.monotonic()
            self._recheck = asyncio.get_running_loop().create_task(self.check(timeout))
        assert self._recheck is not None
        return await asyncio.shield(self._recheck)

    async def check(self, timeout: float) -> bool:
        """GET /health (200 once the model is loaded), then /metrics for the busy count."""
        self.last_check_at = time.monotonic()
        self._last_check_ok = ok = await self._check_once(timeout)
        self.last_check_at = time.monotonic()
        return ok

    async def _check_once(self, timeout: float) -> bool:
        try:
            response = await self.pool.get(b"/health", timeout)
            body = await response.read()
        except UpstreamError as exc:
            self._set_ready(False, str(exc))
            return False
        if response.status != 200:
            self._set_ready(False, f"/health answered {response.status}: {body[:200]!r}")
            return False
        self._set_ready(True, "")
        with contextlib.suppress(UpstreamError):
            metrics = await self.pool.get(b"/metrics", timeout)
            text = await metrics.read()
            if metrics.status == 200:
                busy = 0.0
                for pattern in (_PROCESSING, _DEFERRED):
                    match = pattern.search(text)
                    busy += float(match.group(1)) if match else 0.0
                self.reported_busy = int(busy)
        return True

    def _set_ready(self, ready: bool, reason: str) -> None:
        became_ready = ready and not self.ready
        if ready != self.ready:
            if ready:
                log.info("backend %s is ready", self.name)
            else:
                log.warning("backend %s is not ready: %s", self.name, reason)
        self.ready = ready
        if became_ready and self.on_ready is not None:
            self.on_ready()
        if not ready:
            self.reported_busy = 0
            self._evict_waiters()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(QueueTimeout())


async def health_loop(
    backend: BackendState, settings: HealthCheck, urgent: Callable[[], bool] | None = None
) -> None:
    """Check one backend forever: every interval while healthy; after failed checks the wait
    doubles up to the maximum (one step per check of this loop, never per proxied failure),
    and a backend newly marked failed by a proxied request is checked at once. While
    `urgent()` (requests wait for this GPU backend, issue 31) there is no backoff, and the check
    runs at least every WANTED_CHECK_SECONDS: a waking GPU is found within about a second of
    answering, as for a request that is not waiting (`wanted`), not an interval (5 s by
    default) or a minute later."""
    timeout = min(settings.interval_seconds, 5.0)
    while True:
        ok = await backend.check(timeout)
        backend.failures = 0 if ok else backend.failures + 1
        if backend.ready:
            delay = settings.interval_seconds
        elif urgent is not None and urgent():
            delay = min(settings.interval_seconds, WANTED_CHECK_SECONDS)
        else:
            delay = min(
                settings.interval_seconds * 2 ** min(backend.failures - 1, 16),
                settings.max_backoff_seconds,
            )
        backend.wake_health.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await backend.wake_health.wait()


def retry_after_seconds(backends: Sequence[BackendState], settings: HealthCheck) -> int:
    """What Retry-After says: about when the next health check may find a backend ready."""
    return max(1, min(int(settings.interval_seconds + 0.999), 30))
