"""What every client connection of the router shares (router/server.py): the connection cap with
its O(1) eviction of the longest-idle connection, the one sweep that checks every connection's
deadline, and the drain's flags and steps (app.run_router)."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmctl.router.table import Limits

if TYPE_CHECKING:
    from llmctl.router.server import GuardedHttpTools

log = logging.getLogger("llmctl.router")

_EVICTABLE_AFTER_IDLE_SECONDS = 1.0
# File descriptors the process keeps for itself (listening socket, backend connections, logs).
_FD_RESERVE = 256


class Guard:
    """What every connection shares: the cap, the idle connections oldest first, the deadline
    sweep, and the drain's flags (read by asgi.Reply)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft - _FD_RESERVE < self.max_connections:
            self.max_connections = max(16, soft - _FD_RESERVE)
            log.warning(
                "limits.maxConnections %d lowered to %d: the process may open %d files",
                limits.max_connections,
                self.max_connections,
                soft,
            )
        self.live: set[GuardedHttpTools] = set()
        # Idle connections and since when, oldest first: eviction at the cap is O(1).
        self.idle: OrderedDict[GuardedHttpTools, float] = OrderedDict()
        self.draining = False  # answers say `connection: close` from now on
        self.cutting = False  # the drain deadline passed: what is left is being cancelled
        self.refused = 0
        self._refused_logged = 0
        self._last_refusal_log = 0.0
        # Called with the status of every answer given here (408, 414, 431, 503 at the cap...),
        # so that the app counts them with the rest.
        self.on_refusal: Callable[[int], None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.tick = min(
            1.0,
            limits.header_timeout_seconds / 4,
            limits.body_timeout_seconds / 4,
            limits.keep_alive_timeout_seconds / 4,
        )

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.live):
            if conn.deadline <= now or conn.write_deadline <= now:
                conn.expired(now)
        self._sweeper = asyncio.get_running_loop().call_later(self.tick, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    # --- the cap ---------------------------------------------------------------------------
    def admit(self, conn: GuardedHttpTools) -> bool:
        if len(self.live) >= self.max_connections:
            # Idle for a second at least: a connection just opened has not sent its request
            # yet, and clients reconnecting at once would otherwise evict each other in turn.
            oldest = next(iter(self.idle.items()), None)
            if oldest is None or oldest[1] > time.monotonic() - _EVICTABLE_AFTER_IDLE_SECONDS:
                self._refuse()
                return False
            oldest[0].close()
        self.live.add(conn)
        return True

    def forget(self, conn: GuardedHttpTools) -> None:
        self.live.discard(conn)
        self.idle.pop(conn, None)

    def count(self, status: int) -> None:
        if self.on_refusal is not None:
            self.on_refusal(status)

    def _refuse(self) -> None:
        self.refused += 1
        self.count(503)
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:
            log.warning(
                "at limits.maxConnections (%d busy connections): %d new connection(s) refused "
                "with 503",
                self.max_connections,
                self.refused - self._refused_logged,
            )
            self._last_refusal_log = now
            self._refused_logged = self.refused

    # --- shutdown --------------------------------------------------------------------------
    def close_idle(self) -> None:
        """Close every connection with nothing in progress; the others close after their answer."""
        for conn in list(self.live):
            if conn in self.idle:
                conn.close()
            else:
                conn.stop_reading_after_answer()

    def busy(self) -> int:
        return sum(1 for c in self.live if c.busy)

    async def wait_idle(self, timeout: float) -> bool:
        """Until no request is in progress on any connection, or `timeout` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while self.busy():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def cut(self) -> int:
        """Cancel what is still in progress (its handler sends a last error event or a 503).
        Returns how many requests were cut."""
        self.cutting = True
        cut = 0
        for conn in list(self.live):
            if conn.task is not None and not conn.task.done():
                cut += 1
                conn.task.cancel()
        return cut

    def close_all(self) -> None:
        self.stop()
        for conn in list(self.live):
            conn.close()
