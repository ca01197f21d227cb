"""The root group imports a command's module only when that command is used (cli/lazy.py).

`llmctl --help` lists the commands from their summaries; these tests keep that listing the one
the commands would give themselves, and every command reachable as before.
"""

from __future__ import annotations

import pytest
import typer
from typer._click.core import Context
from typer.testing import CliRunner

from llmctl.cli.lazy import LazyCommand
from llmctl.cli.main import RootGroup, app

LAZY = RootGroup.lazy_commands


def _root_help(root: RootGroup, capsys: pytest.CaptureFixture[str]) -> str:
    root.get_help(Context(root, info_name="llmctl"))  # Typer's Rich help prints it
    return capsys.readouterr().out


def _root() -> RootGroup:
    root = typer.main.get_command(app)
    assert isinstance(root, RootGroup)
    return root


def test_help_lists_each_command_as_its_own_help_describes_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    root = _root()
    from_summaries = _root_help(root, capsys)
    # The same group with every command imported: the listing then comes from the commands.
    root.commands.update({lazy.name: lazy.load() for lazy in LAZY})
    from_commands = _root_help(root, capsys)
    assert "test-inference" in from_commands
    assert from_summaries == from_commands


def test_listing_the_commands_imports_none_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    root = _root()
    assert "render" in _root_help(root, capsys)
    assert root.commands == {}


@pytest.mark.parametrize("lazy", LAZY, ids=[lazy.name for lazy in LAZY])
def test_each_command_runs_under_its_name(lazy: LazyCommand) -> None:
    name = lazy.name
    result = CliRunner().invoke(app, [name, "--help"], prog_name="llmctl", terminal_width=100)
    assert result.exit_code == 0, result.output
    assert f"Usage: llmctl {name}" in result.output


def test_an_unknown_command_is_still_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["rendr"], prog_name="llmctl")
    assert result.exit_code == 2
    assert "No such command 'rendr'" in result.output
