"""The effective Stack as text, for `llmctl config show`."""

from __future__ import annotations

import json

import yaml

from llmctl.config import LoadedStack


def render_config(loaded: LoadedStack, fmt: str) -> str:
    data = loaded.stack.model_dump(by_alias=True, mode="json")
    if fmt == "json":
        sources = {key: str(source) for key, (_, source) in sorted(loaded.changed.items())}
        return json.dumps({"config": data, "sources": sources}, indent=2) + "\n"
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    # Sources go in comments so that stdout stays a valid config file.
    lines = [f"# config file: {loaded.config_file or 'none (built-in defaults)'}"]
    if loaded.changed:
        lines.append("# values that differ from the built-in defaults:")
        width = max(len(key) for key in loaded.changed)
        for key, (value, source) in sorted(loaded.changed.items()):
            lines.append(f"#   {key.ljust(width)} = {json.dumps(value)}  ({source})")
    else:
        lines.append("# every value is a built-in default")
    return text + "\n".join(lines) + "\n"
