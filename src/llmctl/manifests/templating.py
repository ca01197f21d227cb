"""The Jinja environment for templates/: values can't break the YAML they land in."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2

from llmctl.assets import asset_dir
from llmctl.manifests import yaml_io


def _tojson(value: Any) -> str:
    # Jinja's own tojson escapes <, > and & for HTML; manifests want plain, stable JSON.
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(asset_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _tojson
    env.filters["combine"] = lambda base, extra: {**base, **extra}
    return env


def render_documents(template: str, context: dict[str, Any]) -> list[Any]:
    """Render one template and parse it: a template that yields broken YAML fails here."""
    text = environment().get_template(template).render(**context)
    try:
        return yaml_io.load_all(text)
    except Exception as exc:  # yaml.YAMLError; report which template, not a parser trace
        raise ValueError(f"template {template} rendered invalid YAML: {exc}") from exc
