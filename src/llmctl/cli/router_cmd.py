"""`llmctl router serve`: run the OpenAI-compatible router (what the llm-router image runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from llmctl.errors import ConfigError

app = typer.Typer(help="The OpenAI-compatible router in front of the llama.cpp servers.",
                  no_args_is_help=True)


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The router.yaml file (default: $LLMCTL_CONFIG).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", min=1, max=65535,
                                      help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/models, /healthz, /readyz, /metrics."""
    # The server's modules load here, so `llmctl --help` never imports them.
    from llmctl.router.serve import ServeError, serve_router

    path = config or (Path(os.environ["LLMCTL_CONFIG"]) if os.environ.get("LLMCTL_CONFIG")
                      else None)
    if path is None:
        _config_error(ConfigError("no router config given",
                                  hint="pass --config router.yaml or set LLMCTL_CONFIG"))
    try:
        serve_router(path, host, port, log_level)
    except ServeError as exc:
        _config_error(ConfigError(str(exc), hint=exc.hint))


def _config_error(error: ConfigError) -> NoReturn:
    # Printed here rather than raised: this typer release runs its own vendored click, which
    # does not catch the `click.ClickException` that llmctl's errors derive from.
    typer.echo(f"Error: {error.format_message()}", err=True)
    raise typer.Exit(error.exit_code)
