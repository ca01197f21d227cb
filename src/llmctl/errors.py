"""Errors that reach the user as one clear sentence and a hint, never as a traceback.

They are click exceptions, so Typer prints them and exits with their code without any wrapper in
the commands: 2 for usage or configuration errors, 1 for failures.
"""

from __future__ import annotations

# Typer 0.29 vendors click and catches only its own copy's ClickException; it exports no public
# name for it, so this reaches into typer._click (pinned by the typer>=0.29 requirement).
from typer._click.exceptions import ClickException


class LlmctlError(ClickException):
    """A failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def format_message(self) -> str:
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message


class ConfigError(LlmctlError):
    """A bad configuration value or command-line usage: exit code 2."""

    exit_code = 2
