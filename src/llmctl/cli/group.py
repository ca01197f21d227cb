"""The root command group: llmctl's conventions for every command, in one place.

They follow kubectl, helm and gh (docs/cli.md lists them):

- a bare `llmctl` or a bare command group (`llmctl gpu`) prints its help on stdout and exits 0;
- `-h` is `--help`;
- exit codes: 0 success, 1 failure, 2 usage or configuration error, 130 interrupted (Ctrl-C,
  prompts included);
- never a traceback: a missing optional package becomes the one-line error of its extra, with the
  pip command that installs it; anything else unexpected is reported as a bug in one line, and
  `LLMCTL_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import typer
from typer import Abort, Exit
from typer._click.core import Command, Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from llmctl.cli.lazy import LazyCommand
from llmctl.errors import LlmctlError

DEBUG_ENV = "LLMCTL_DEBUG"
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
# Write errors that say the destination is full, not that llmctl is wrong.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _show_help(ctx: Context) -> None:
    typer.echo(ctx.get_help())
    raise Exit(0)


def translate(exc: BaseException) -> ClickException | None:
    """The user-facing error for an exception that escaped a command, or None to let it be."""
    from llmctl import extras

    if isinstance(exc, ModuleNotFoundError):
        extra = extras.extra_for_module(exc.name)
        if extra is not None:
            return extras.missing_extra(extra, str(exc.name).split(".", 1)[0])
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        return None  # typer quietens a closed pipe (`llmctl ... | head`) itself
    if isinstance(exc, OSError) and exc.errno in _FULL and not exc.filename:
        # stdout on a full disk (`llmctl plan > /dev/full`): where the output goes is the problem.
        return LlmctlError(
            f"cannot write the output: {exc.strerror or exc}",
            hint="free some space, or send the output somewhere else",
        )
    if isinstance(exc, OSError) and exc.filename and not os.environ.get(DEBUG_ENV):
        # A path the user named that cannot be read or written: their problem to fix, not a bug.
        return LlmctlError(
            f"cannot use {exc.filename}: {exc.strerror or exc}",
            hint="check the path and its permissions",
        )
    if os.environ.get(DEBUG_ENV):
        return None
    return LlmctlError(
        f"llmctl hit a bug: {type(exc).__name__}: {exc}",
        hint=f"run it again with {DEBUG_ENV}=1 to see the traceback, and report it",
    )


class LlmctlGroup(TyperGroup):
    # Commands imported only when used (cli/lazy.py); a subclass names them.
    lazy_commands: tuple[LazyCommand, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = {command.name: command for command in self.lazy_commands}
        self._listing_only = False

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self._lazy if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        lazy = self._lazy.get(cmd_name)
        if command is not None or lazy is None:
            return command
        if self._listing_only:
            return lazy.listing()
        command = self.commands[cmd_name] = lazy.load()
        return command

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        # The help lists the commands by their summaries: it imports none of them.
        self._listing_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing_only = False

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            _show_help(ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError as exc:
            # A bare command group (`llmctl gpu`): its help, exit 0, as `kubectl config` does.
            _show_help(exc.ctx)
        except (ClickException, Exit, Abort):
            raise
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from None
