"""Bearer keys read from a file (one a line, # comments) and/or an env var (comma-separated).

Client API keys and the federation's peer key are read the same way; only what they are for, and
so the error when none is found, differ.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path


def read_keys(file: str | None, env: str | None, setting: str) -> list[str]:
    """Every key in `file` and `$env`; `setting` names the config key when the file is missing."""
    keys: list[str] = []
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{setting}.file {file} does not exist")
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    if env:
        keys += [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    return keys


def bearer_matches(headers: Mapping[str, str], keys: Iterable[bytes]) -> bool:
    """Whether the request's `Authorization: Bearer <token>` is one of `keys`."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    # Header bytes were decoded as latin-1: encoding back gives the bytes the client sent,
    # so a key with non-ASCII characters matches when sent in UTF-8 (as clients do).
    given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    # Compare with every key, always: the time taken says nothing about which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched
