"""Backend state in-process: slots, health-check pacing, re-routing of waiters (issue 19)."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmctl.router.backends import BackendState, health_loop
from llmctl.router.table import Backend, HealthCheck, Tier


def make_backend() -> BackendState:
    config = Backend(
        name="aws/cpu", url="http://127.0.0.1:9", tier=Tier.CPU, cloud="aws", model="m", slots=1
    )
    return BackendState(config)


def test_a_burst_of_proxied_failures_is_one_check_not_one_backoff_step_each() -> None:
    """Review finding 5: every failed proxied request woke the health loop, and every check
    it ran doubled the wait: 6 failures in a row put a recovered backend 32 s (capped at 60)
    away from its next check."""

    async def scenario() -> tuple[int, float]:
        backend = make_backend()
        state = {"healthy": True, "checks": 0}

        async def fake_check(timeout: float) -> bool:
            state["checks"] += 1
            backend._set_ready(bool(state["healthy"]), "test")
            return bool(state["healthy"])

        backend.check = fake_check  # type: ignore[method-assign]
        loop_task = asyncio.get_running_loop().create_task(
            health_loop(backend, HealthCheck(intervalSeconds=1, maxBackoffSeconds=60))
        )
        await asyncio.sleep(0.05)
        assert backend.ready
        state["healthy"] = False
        checks_before = state["checks"]
        for _ in range(6):  # six queued requests fail one after the other
            backend.mark_failed("reset")
            await asyncio.sleep(0.02)
        burst_checks = state["checks"] - checks_before
        state["healthy"] = True
        started = time.monotonic()
        while not backend.ready and time.monotonic() - started < 40:
            await asyncio.sleep(0.02)
        loop_task.cancel()
        return burst_checks, time.monotonic() - started

    burst_checks, recovered = asyncio.run(scenario())
    assert burst_checks <= 1
    assert recovered < 5, f"checked again after {recovered:.1f} s"


def test_waiters_move_on_when_their_backend_is_marked_failed() -> None:
    """Review finding 7: requests queued on a backend that failed stayed queued until their
    queue timeout (429 after 30 s) although another backend was free."""
    from llmctl.router.backends import BackendGone

    async def scenario() -> type[BaseException] | None:
        backend = make_backend()
        backend.ready = True
        await backend.acquire(1.0)  # the only slot
        waiter = asyncio.get_running_loop().create_task(backend.acquire(30.0))
        await asyncio.sleep(0.01)
        backend.mark_failed("connect refused")
        try:
            async with asyncio.timeout(2):
                await waiter
        except BackendGone:
            return BackendGone
        except TimeoutError:
            return TimeoutError
        return None

    assert asyncio.run(scenario()) is BackendGone


@pytest.mark.parametrize("ready_after", [True, False])
def test_a_slot_granted_after_eviction_is_not_lost(ready_after: bool) -> None:
    async def scenario() -> int:
        backend = make_backend()
        backend.ready = True
        await backend.acquire(1.0)
        waiter = asyncio.get_running_loop().create_task(backend.acquire(30.0))
        await asyncio.sleep(0.01)
        backend.mark_failed("x")
        backend.ready = ready_after
        backend.release()
        await asyncio.gather(waiter, return_exceptions=True)
        return backend.in_flight

    assert asyncio.run(scenario()) == 0
