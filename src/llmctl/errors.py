"""Errors that reach the user as one clear sentence and a hint, never as a traceback.

They are click exceptions, so Typer prints them and exits with their code without any wrapper in
the commands: 2 for usage or configuration errors, 1 for failures.
"""

from __future__ import annotations

try:
    # typer 0.29+ vendors click as typer._click, and its command runner catches only that copy's
    # ClickException: a subclass of the separate `click` package escapes as a traceback.
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - typer versions that still use the click package
    from click import ClickException  # type: ignore[assignment]


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
