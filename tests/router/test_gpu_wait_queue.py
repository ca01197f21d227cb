"""The GPU wait queue and the wait a request asks for (router/gpu_wait.py), in one event loop:
the bounds, the order, a waiter that leaves, the drain; and the health loop that stops backing
off while requests wait for its GPU backend."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from llmctl.router.backends import WANTED_CHECK_SECONDS, BackendState, health_loop
from llmctl.router.errors import ApiError
from llmctl.router.gpu_wait import GpuWaitQueue, Outcome, wait_seconds
from llmctl.router.table import Backend, GpuWait, HealthCheck, Tier
from tests.support.llama import free_port

SETTINGS = GpuWait(defaultSeconds=0, maxSeconds=120, maxDepth=2)


def test_wait_comes_from_the_header_else_the_key_else_the_config_and_is_capped() -> None:
    assert wait_seconds({}, SETTINGS) == 0
    assert wait_seconds({"x-llm-gpu-wait": "45"}, SETTINGS) == 45
    assert wait_seconds({"x-llm-gpu-wait": " 2.5 "}, SETTINGS) == 2.5
    assert wait_seconds({"x-llm-gpu-wait": "900"}, SETTINGS) == 120  # capped at maxSeconds
    assert wait_seconds({}, GpuWait(defaultSeconds=30)) == 30
    assert wait_seconds({}, SETTINGS, key_default=10) == 10  # the per-key hook (issue 31 part 2)
    assert wait_seconds({"x-llm-gpu-wait": "0"}, SETTINGS, key_default=10) == 0


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf", "1e999"])
def test_a_bad_wait_header_is_a_400_naming_the_header(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        wait_seconds({"x-llm-gpu-wait": value}, SETTINGS)
    error = caught.value
    assert (error.status, error.param, error.type) == (
        400,
        "x-llm-gpu-wait",
        "invalid_request_error",
    )
    assert "number of seconds" in error.message


def test_default_longer_than_the_cap_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="defaultSeconds must not be longer than maxSeconds"):
        GpuWait(defaultSeconds=300, maxSeconds=60)


def test_waiters_are_woken_oldest_first_and_the_depth_is_bounded() -> None:
    async def scenario() -> tuple[list[str], Outcome, int]:
        queue = GpuWaitQueue(max_depth=2)
        ready = False
        order: list[str] = []

        async def waiter(name: str) -> None:
            assert await queue.wait(30, lambda: ready) == Outcome.GPU
            order.append(name)

        first = asyncio.create_task(waiter("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(waiter("second"))
        await asyncio.sleep(0)
        assert queue.depth == 2
        full = await queue.wait(30, lambda: ready)  # a third: the queue is full
        queue.wake()  # woken, but no GPU yet: both wait on, in their order
        await asyncio.sleep(0)
        assert queue.depth == 2 and not order
        ready = True
        queue.wake()
        await asyncio.gather(first, second)
        return order, full, queue.depth

    order, full, depth = asyncio.run(scenario())
    assert order == ["first", "second"]
    assert full == Outcome.FULL
    assert depth == 0


def test_a_waiter_that_leaves_frees_its_place_at_once() -> None:
    async def scenario() -> tuple[int, int, Outcome]:
        queue = GpuWaitQueue(max_depth=1)
        leaving = asyncio.create_task(queue.wait(30, lambda: False))
        await asyncio.sleep(0)
        full_before = queue.depth
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        after = queue.depth
        # The freed place is taken at once; the new waiter's wait runs out on its own.
        outcome = await queue.wait(0.05, lambda: False)
        return full_before, after, outcome

    full_before, after, outcome = asyncio.run(scenario())
    assert (full_before, after) == (1, 0)
    assert outcome == Outcome.TIMEOUT


def test_close_ends_every_wait_and_refuses_new_ones() -> None:
    async def scenario() -> tuple[Outcome, Outcome, Outcome]:
        queue = GpuWaitQueue(max_depth=4)
        waiting = asyncio.create_task(queue.wait(30, lambda: False))
        await asyncio.sleep(0)
        queue.close()
        return (
            await waiting,
            await queue.wait(30, lambda: False),
            await queue.wait(30, lambda: True),
        )

    assert asyncio.run(scenario()) == (Outcome.SHUTDOWN, Outcome.SHUTDOWN, Outcome.GPU)


async def _checks_within(seconds: float, urgent: bool, interval: float, want: int) -> int:
    """How many health checks a GPU backend that stays down gets within `seconds` (counting
    stops at `want`)."""
    backend = BackendState(
        Backend(name="aws/gpu", url=f"http://127.0.0.1:{free_port()}", tier=Tier.GPU,
                cloud="aws", model="m", slots=1)
    )  # fmt: skip
    count = 0
    real_check = backend.check

    async def counted(timeout: float) -> bool:
        nonlocal count
        count += 1
        return await real_check(timeout)

    backend.check = counted  # type: ignore[method-assign]
    settings = HealthCheck(intervalSeconds=interval, maxBackoffSeconds=100)
    task = asyncio.create_task(health_loop(backend, settings, lambda: urgent))
    deadline = asyncio.get_running_loop().time() + seconds
    while count < want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    backend.pool.close()
    return count


def test_the_health_loop_skips_its_backoff_while_requests_wait_for_the_gpu() -> None:
    """A GPU backend that has been down a while is checked every maxBackoffSeconds (a minute by
    default); with requests waiting for it, every intervalSeconds, so a waking GPU is found
    at once. 20 failed checks take 0.2 s urgent; without it, the backoff alone is minutes."""
    assert asyncio.run(_checks_within(5.0, urgent=True, interval=0.01, want=20)) >= 20
    assert asyncio.run(_checks_within(1.0, urgent=False, interval=0.01, want=20)) < 20


def test_waiting_requests_get_a_check_every_second_at_the_default_interval() -> None:
    """With the default 5 s interval, a waiter found its GPU up to 5 s after the pod was Ready;
    now within WANTED_CHECK_SECONDS, as a request that does not wait would (`wanted`)."""
    assert WANTED_CHECK_SECONDS == 1.0
    # Checks at 0, 1 and 2 s; the old loop made one, its next was due at 5 s.
    assert asyncio.run(_checks_within(4.0, urgent=True, interval=5.0, want=3)) == 3
