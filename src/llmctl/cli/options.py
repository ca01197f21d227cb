"""Options shared by several commands, and the one place that loads the Stack for a command."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def option_group(
    param: str, build: Callable[..., Any], options: Mapping[str, Any], types: Mapping[str, Any]
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Options defined once and handed to a command as one value (`llmctl gpu`'s Target, `llmctl
    cost estimate`'s Workload): the command declares `param`; typer sees, in its place, one option
    per entry of `options`, annotated from `types`; the command gets `build(**their values)`."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command).parameters.values())
        at = [p.name for p in own].index(param)
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.name != param]
        group = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=types[name]
            )
            for name, option in options.items()
        ]

        @functools.wraps(command)
        def with_group(**given: Any) -> None:
            value = build(**{name: given.pop(name) for name in options})
            command(**{param: value}, **given)

        parameters = kept[:at] + group + kept[at:]
        with_group.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        with_group.__annotations__ = {
            **{p.name: p.annotation for p in kept},
            **{p.name: p.annotation for p in group},
        }
        return with_group

    return decorate
