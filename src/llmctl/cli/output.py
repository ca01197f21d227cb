"""`--output json`: one convention for every command (docs/cli.md, "JSON output").

Keys are camelCase, with the unit spelt out (`wallSeconds`, `tokensPerSecond`); keys that are
data rather than field names (a label, a tier, a backend, an error kind) stay as they are.
Commands whose data is already camelCase (plan, gpu status, config show) print it as it is; the
others pass it through `to_json`.
"""

from __future__ import annotations

import json
from typing import Any

# Fields whose values are maps keyed by data, not by field names. `config` is the Stack config in
# the file's own spelling (its llamacpp block keeps llama.cpp's flag names, e.g. flash_attn).
DATA_MAPS = frozenset({"labels", "annotations", "tiers", "backends", "errors", "codes", "config"})


def camel(key: str) -> str:
    """wall_s -> wallSeconds, output_tokens_per_s -> outputTokensPerSecond, ok -> ok."""
    if "_" not in key:
        return key
    parts = key.split("_")
    if parts[-1] == "s":
        parts[-1] = "second" if len(parts) > 1 and parts[-2] == "per" else "seconds"
    elif parts[-1] == "rps":
        parts[-1:] = ["requests", "per", "second"]
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:] if p)


def camel_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            camel(str(k)): (v if str(k) in DATA_MAPS else camel_keys(v)) for k, v in data.items()
        }
    if isinstance(data, list):
        return [camel_keys(v) for v in data]
    return data


def to_json(data: Any) -> str:
    return json.dumps(camel_keys(data), indent=2)
