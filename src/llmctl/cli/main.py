"""The `llmctl` entry point: one Typer app with a sub-app or command per module."""

from __future__ import annotations

import typer

from llmctl import __version__
from llmctl.cli import (
    config_cmd,
    cost_cmd,
    gpu_cmd,
    inference_cmd,
    plan_cmd,
    render_cmd,
    router_cmd,
)

app = typer.Typer(
    name="llmctl",
    help="Serve llama.cpp models on Kubernetes across AWS, Azure and GCP, with GPUs only when "
    "they pay for themselves.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Serve llama.cpp models on Kubernetes across AWS, Azure and GCP."""


app.command("render")(render_cmd.render)
app.command("plan")(plan_cmd.plan)
app.add_typer(config_cmd.app, name="config")
app.add_typer(cost_cmd.app, name="cost")
app.add_typer(router_cmd.app, name="router")
app.add_typer(gpu_cmd.app, name="gpu")
app.command("test-inference")(inference_cmd.test_inference)


def main() -> None:
    app()
