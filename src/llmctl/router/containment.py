"""Poison requests (review 2026-12-06 N1): a request whose body crashed a backend is not sent
to another backend for a while, by this router or by its peers.

A backend that dies holding a request (reset, then no answer to a health check) answers the
client 502 `backend_crashed`, and the body's hash is held here for `QUARANTINE_SECONDS`. Copies
of that body (a client's retries, the openai client's own retries of a 502) are then refused
with 422 `request_quarantined` before any backend sees them. A forwarding router takes a peer's
502 `backend_crashed` as final and holds the hash too; every router lists what it holds in its
/readyz (`quarantine`, hash and seconds left), and its peers take that list at their next read,
so a copy sent to any router of the federation is refused within one readiness interval.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

QUARANTINE_SECONDS = 300.0
# At most this many bodies held (oldest dropped first): a bound on memory and on /readyz.
MAX_HELD = 256
_DIGEST = re.compile(r"[0-9a-f]{32}")


def body_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class Quarantine:
    def __init__(
        self, seconds: float = QUARANTINE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self._until: dict[str, float] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._until)

    def hold(self, digest: str, seconds: float | None = None) -> None:
        """Hold `digest` for `seconds` (default: the full time); never shortens a hold."""
        until = self.clock() + (self.seconds if seconds is None else seconds)
        if self._until.get(digest, 0.0) >= until:
            return
        self._until.pop(digest, None)
        self._until[digest] = until
        while len(self._until) > MAX_HELD:
            del self._until[next(iter(self._until))]

    def holds(self, body: bytes) -> bool:
        """Whether `body` crashed a backend lately (no hashing while nothing is held)."""
        if not self._until:
            return False
        self._expire()
        return body_hash(body) in self._until

    def report(self) -> list[list[object]]:
        """What /readyz lists: [hash, seconds left] for each body held."""
        self._expire()
        now = self.clock()
        return [[digest, round(until - now, 1)] for digest, until in self._until.items()]

    def learn(self, entries: object) -> int:
        """Take a peer's /readyz `quarantine` list; malformed entries are skipped. Each is held
        for the time the peer has left, never longer (two peers never keep one alive)."""
        if not isinstance(entries, list):
            return 0
        learned = 0
        for entry in entries[:MAX_HELD]:
            if not (isinstance(entry, list) and len(entry) == 2):
                continue
            digest, left = entry
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                continue
            if type(left) not in (int, float) or not 0 < left <= self.seconds:
                continue
            self.hold(digest, float(left))
            learned += 1
        return learned

    def _expire(self) -> None:
        now = self.clock()
        for digest in [d for d, until in self._until.items() if until <= now]:
            del self._until[digest]
