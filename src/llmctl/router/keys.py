"""Bearer keys read from a file (one a line, # comments) and/or an env var (comma-separated).

Client API keys and the federation's peer key are read the same way; only what they are for, and
so the error when none is found, differ.
"""

from __future__ import annotations

import os
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
