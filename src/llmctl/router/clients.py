"""Client keys at run time (issue 31): reading them with their names and policies, telling which
one a request carries, and each key's request rate limit.

A key's name, never its secret, is what the metrics and the logs show. Keys from a plain list
(no `apiKeys.keys` in the config) are all named `default`; a router without keys names every
request `anonymous`, and a request forwarded by a peer router `peer`.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmctl.router.key_config import KEY_NAME_PATTERN, ApiKeys, KeyPolicy
from llmctl.router.keys import read_keys

PLAIN_KEY_NAME = "default"
ANONYMOUS = "anonymous"
PEER = "peer"

_NAME = re.compile(KEY_NAME_PATTERN)


@dataclass(frozen=True)
class ClientKey:
    name: str
    secret: bytes = field(repr=False)
    policy: KeyPolicy | None = None


def load_client_keys(settings: ApiKeys) -> list[ClientKey]:
    """Every key `apiKeys` configures, with its name and policy. A ValueError names what is wrong
    (and where) without showing any secret."""
    where = " and ".join(
        w for w in (settings.file, f"${settings.env}" if settings.env else None) if w
    )
    entries = read_keys(settings.file, settings.env, "apiKeys")
    if (settings.file or settings.env) and not entries:
        raise ValueError(f"apiKeys is configured but no key was found in {where}")
    if not settings.keys:
        return [ClientKey(PLAIN_KEY_NAME, entry.encode()) for entry in entries]
    policies = {p.name: p for p in settings.keys}
    keys: list[ClientKey] = []
    for number, entry in enumerate(entries, 1):
        name, colon, secret = entry.partition(":")
        if not colon or not secret or not _NAME.match(name):
            raise ValueError(
                f"apiKeys: entry {number} in {where} is not 'name:secret' (with apiKeys.keys "
                "set, every entry names its key; the secret is not shown)"
            )
        policy = policies.get(name)
        if policy is None:
            raise ValueError(
                f"apiKeys: entry {number} in {where} names key {name!r}, which apiKeys.keys "
                f"does not list (known: {', '.join(policies)})"
            )
        keys.append(ClientKey(name, secret.encode(), policy))
    return keys


def identify(headers: Mapping[str, str], keys: Sequence[ClientKey]) -> ClientKey | None:
    """The key a request's `Authorization: Bearer <token>` carries, or None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    # Header bytes were decoded as latin-1: encoding back gives the bytes the client sent,
    # so a key with non-ASCII characters matches when sent in UTF-8 (as clients do).
    given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    # Compare with every key, always: the time taken says nothing about which one matched.
    found: ClientKey | None = None
    for key in keys:
        if hmac.compare_digest(given, key.secret) and found is None:
            found = key
    return found


class RateLimiter:
    """A token bucket per key: `requestsPerMinute` requests at once at most, refilled at that
    rate. Per router replica: with N replicas a key may send up to N times its limit."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)

    def take(self, key: str, per_minute: float, now: float | None = None) -> int | None:
        """None when the request may go, else the seconds to wait (for Retry-After)."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        capacity = max(per_minute, 1.0)
        tokens, at = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rate))
