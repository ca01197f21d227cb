"""`llmctl config show`: the effective Stack, and where each non-default value came from."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from llmctl.cli import options

app = typer.Typer(help="Inspect llmctl's configuration.", no_args_is_help=True)


class ConfigFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


@app.command("show")
def show(
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
    output: ConfigFormat = typer.Option(ConfigFormat.YAML, "--output", "-o", help="yaml or json."),
) -> None:
    """Print the effective configuration and the source of every non-default value."""
    from llmctl.cli.config_report import render_config

    typer.echo(render_config(options.load(config, sets), output.value), nl=False)
