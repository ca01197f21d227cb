"""Loading the router's config and running it until a signal: what `llmctl router serve` and
the image's entrypoint call."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmctl.router.app import install_uvloop, load_api_keys, run_router
from llmctl.router.peers import load_peer_keys
from llmctl.router.table import RouterConfig, load_router_config


class ServeError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def read_config(path: Path) -> RouterConfig:
    """The validated config, or a ServeError that names the file and the bad field."""
    if not path.is_file():
        raise ServeError(
            f"router config {path} does not exist",
            hint="render it with `llmctl render` (ConfigMap llm-router-config)",
        )
    try:
        config = load_router_config(path)
    except yaml.YAMLError as exc:
        raise ServeError(f"router config {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        # The settings shared with llmctl.yaml carry their own hint (config/router_settings.py).
        own_hint = first.get("ctx", {}).get("hint")
        count = f"{exc.error_count()} problems in total" if exc.error_count() > 1 else None
        raise ServeError(
            f"router config {path}: {field}: {first['msg']}",
            hint="; ".join(h for h in (own_hint, count) if h) or None,
        ) from None
    known = {m.name for m in config.models}
    if config.policy.fallback_model not in known:
        raise ServeError(
            f"router config {path}: policy.fallbackModel "
            f"{config.policy.fallback_model!r} is not one of the models: "
            f"{', '.join(sorted(known))}"
        )
    for backend in config.backends:
        if not backend.url.startswith("http://"):
            raise ServeError(
                f"router config {path}: backend {backend.name}: only http:// "
                "backend URLs are supported"
            )
    try:
        load_api_keys(config.api_keys)
        if config.federation is not None:  # federation (issue 16): peers need the peer key
            load_peer_keys(config.federation.peer_key)
    except (OSError, ValueError) as exc:
        raise ServeError(f"router config {path}: {exc}") from None
    return config


def serve_router(path: Path, host: str, port: int, log_level: str = "info") -> None:
    config = read_config(path)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_uvloop()
    asyncio.run(run_router(config, host, port))
