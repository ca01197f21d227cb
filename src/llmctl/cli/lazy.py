"""Commands whose modules are imported only when they are used.

`llmctl --help` lists every command but runs none, so it should not pay for importing them all
(pydantic models, the catalog, Rich tables: about a fifth of its start-up, `benchmarks/cli.py`).
The root group lists each command by the summary kept here, and imports its module only when
the command runs, shows its own help, or is completed by the shell.
`tests/cli/test_lazy_commands.py` keeps each summary equal to the command's own first help line.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import typer
from typer._click.core import Command
from typer.core import TyperCommand


@dataclass(frozen=True)
class LazyCommand:
    name: str
    # "module:attribute": a Typer sub-app (a command group) or a command function.
    target: str
    # Its line in the parent's help: the command's first help paragraph, on one line.
    summary: str

    def load(self) -> Command:
        module, _, attribute = self.target.partition(":")
        loaded = getattr(import_module(module), attribute)
        if isinstance(loaded, typer.Typer):
            command: Command = typer.main.get_group(loaded)
        else:
            # A one-command app, as the root group would have made it (no completion options:
            # those belong to the root).
            single = typer.Typer(add_completion=False)
            single.command(self.name)(loaded)
            command = typer.main.get_command(single)
        command.name = self.name
        return command

    def listing(self) -> Command:
        """What the parent's help needs to list this command: its name and summary, no import."""
        return TyperCommand(self.name, help=self.summary)
