"""`llmctl router serve`: run the OpenAI-compatible router (what the llm-router image runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmctl.errors import ConfigError

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
    # The server's modules load here, so `llmctl --help` never imports them.
    from llmctl.router.serve import ServeError, serve_router

    if config is None:
        raise ConfigError(
            "no router config given", hint="pass --config router.yaml or set LLMCTL_ROUTER_CONFIG"
        )
    try:
        serve_router(config, host, port, log_level)
    except ServeError as exc:
        raise ConfigError(str(exc), hint=exc.hint) from None
