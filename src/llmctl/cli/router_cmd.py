"""`llmctl router serve`: run the OpenAI-compatible router (what the llm-router image runs)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from llmctl.errors import ConfigError, LlmctlError

LOG_LEVELS = ("debug", "info", "warning", "error")

app = typer.Typer(
    help="The OpenAI-compatible router in front of the llama.cpp servers.", no_args_is_help=True
)


@app.command("serve")
def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="LLMCTL_ROUTER_CONFIG", help="The router.yaml file."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8080,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/models, /healthz, /readyz, /metrics."""
    if config is None:
        raise ConfigError(
            "no router config given", hint="pass --config router.yaml or set LLMCTL_ROUTER_CONFIG"
        )
    if log_level.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"--log-level {log_level!r} is not a log level",
            hint=f"allowed values: {', '.join(LOG_LEVELS)}",
        )
    _refuse_a_manifest(config)
    # The server's modules load here, so `llmctl --help` never imports them; without the
    # router extra the import fails and cli/group.py names the extra to install.
    from llmctl.router.serve import ServeError, serve_router

    try:
        serve_router(config, host, port, log_level.lower())
    except ServeError as exc:
        raise ConfigError(str(exc), hint=exc.hint) from None
    except OSError as exc:
        raise _listen_error(exc, host, port) from None


def _refuse_a_manifest(config: Path) -> None:
    """The file a newcomer finds first, clusters/<cloud>/base/router.yaml, is the Kubernetes
    manifest that carries the router config in a ConfigMap, not the config itself (review
    2026-12-06, N5): say so, and where the config is, instead of a YAML parser's complaint."""
    import yaml

    try:
        text = config.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"router config {config} is not UTF-8 text",
            hint="pass the router's YAML config (docs/router.md, 'Config file')",
        ) from None
    except OSError:
        return  # the router reports a missing or unreadable file itself
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        return  # the router reports where the YAML is broken
    kinds = [d.get("kind") for d in documents if isinstance(d, dict) and "apiVersion" in d]
    if not kinds:
        return
    holds = any(
        d.get("kind") == "ConfigMap" and "router.yaml" in (d.get("data") or {})
        for d in documents
        if isinstance(d, dict)
    )
    raise ConfigError(
        f"{config} is a Kubernetes manifest ({', '.join(map(str, kinds))}), not a router config"
        + (": its ConfigMap carries the config under data.router.yaml" if holds else ""),
        hint="in a cluster the router reads that ConfigMap; to run it here, write a router.yaml "
        "with your own backends as in docs/router.md, 'Config file'",
    )


def _listen_error(exc: OSError, host: str, port: int) -> Exception:
    """A port that cannot be bound is a failure the user can fix: one line, exit 1."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return LlmctlError(
            f"port {port} is in use: cannot listen on {where}",
            hint=f"stop what listens there (ss -ltnp 'sport = :{port}') or pick another --port",
        )
    if exc.errno == errno.EACCES:
        return LlmctlError(
            f"no permission to listen on {where}",
            hint="ports below 1024 need privileges: pick --port 8080 or above",
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return LlmctlError(
            f"cannot listen on {where}: {exc.strerror or exc}",
            hint="--host must be an address of this machine, e.g. 0.0.0.0 or 127.0.0.1",
        )
    return exc
