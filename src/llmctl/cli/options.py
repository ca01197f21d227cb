"""Options shared by several commands, and the one place that loads the Stack for a command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from llmctl.config import LoadedStack

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="Stack config file (default: $LLMCTL_CONFIG, else ./llmctl.yaml if present).",
    dir_okay=False,
)
SetOption = typer.Option(
    None,
    "--set",
    help="Override one setting, e.g. --set gpu.maxReplicas=3 (repeatable).",
    metavar="KEY=VALUE",
)


def load(config: Path | None, sets: list[str] | None, gpu: bool | None = None) -> LoadedStack:
    from llmctl.config import load_stack, parse_set_flags

    flags = parse_set_flags(sets or [])
    if gpu is not None:
        from llmctl.config import Source

        flags.set(("gpu", "enabled"), gpu, Source("flag", "--gpu" if gpu else "--no-gpu"))
    return load_stack(config, flags=flags)
