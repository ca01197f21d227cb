"""Waiting on a condition, never on time: the one poll loop the tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, every_s: float = 0.25
) -> T:
    """Poll until `probe` returns something truthy, and return it; fail naming `what` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)
