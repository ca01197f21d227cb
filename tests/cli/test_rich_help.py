"""Typer's help with the stand-ins for rich.markdown and rich.traceback (cli/rich_help.py).

Each case runs in a fresh interpreter, since what it checks is what gets imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.cli import llmctl_env

# Every help page and a usage error, printed by the app in one process: with the stand-ins,
# and (DEFER=0) without.
PAGES = """
import json, os, sys
from typer.testing import CliRunner
from llmctl.cli.main import app
from llmctl.cli.rich_help import defer_unused_rich_imports
if os.environ["DEFER"] == "1":
    defer_unused_rich_imports()
pages = {}
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args, prog_name="llmctl", terminal_width=100, color=True)
    pages[" ".join(args)] = [result.exit_code, result.output]
unused = ("rich.markdown", "rich.traceback", "markdown_it", "pygments")
loaded = [m for m in unused if m in sys.modules]
print(json.dumps({"pages": pages, "loaded": loaded}))
"""

ARGS = [
    ["--help"],
    ["render", "--help"],
    ["plan", "--help"],
    ["test-inference", "--help"],
    ["config", "--help"],
    ["cost", "estimate", "--help"],
    ["router", "serve", "--help"],
    ["gpu", "--help"],
    ["gpu", "enable", "--help"],
    ["model", "push", "--help"],
    ["render", "--bogus"],
    ["plan", "--parallel", "0"],
    ["rendr"],
]


def _pages(defer: bool) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PAGES, json.dumps(ARGS)],
        capture_output=True,
        text=True,
        env=llmctl_env({"DEFER": "1" if defer else "0", "COLUMNS": "100"}),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_help_and_usage_errors_are_the_same_with_the_stand_ins() -> None:
    deferred, plain = _pages(defer=True), _pages(defer=False)
    assert deferred["pages"] == plain["pages"]
    assert deferred["loaded"] == []
    # Without them, typer.rich_utils imports both: the stand-ins are what keeps them out.
    assert plain["loaded"] == ["rich.markdown", "rich.traceback", "markdown_it", "pygments"]


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=llmctl_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_stand_in_becomes_the_real_class_when_used() -> None:
    out = _run(
        "import io, rich.console, rich.markdown, rich.traceback, sys\n"
        "from llmctl.cli.rich_help import defer_unused_rich_imports\n"
        "for m in ('rich.markdown', 'rich.traceback'): del sys.modules[m]\n"
        "defer_unused_rich_imports()\n"
        "import typer.rich_utils as ru\n"
        "md = ru.Markdown('*hi*')\n"
        "import rich.markdown, rich.traceback\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError as exc:\n"
        "    tb = ru.Traceback.from_exception(type(exc), exc, exc.__traceback__)\n"
        "print(type(md) is rich.markdown.Markdown, type(tb) is rich.traceback.Traceback)\n"
    )
    assert out == "True True"


def test_only_typer_rich_utils_sees_the_stand_ins() -> None:
    out = _run(
        "import sys\n"
        "from llmctl.cli.rich_help import defer_unused_rich_imports\n"
        "defer_unused_rich_imports(); defer_unused_rich_imports()\n"
        "finders = sum(type(f).__name__ == '_RichUtilsFinder' for f in sys.meta_path)\n"
        "import typer.rich_utils\n"
        "after = sum(type(f).__name__ == '_RichUtilsFinder' for f in sys.meta_path)\n"
        "print(finders, after, 'rich.markdown' in sys.modules)\n"
        "from rich.markdown import Markdown\n"
        "print(Markdown.__module__, type(Markdown).__name__)\n"
    )
    assert out.splitlines() == ["1 0 False", "rich.markdown type"]


@pytest.mark.parametrize("module", ["rich.markdown", "rich.traceback"])
def test_a_module_imported_before_is_left_alone(module: str) -> None:
    out = _run(
        f"import {module} as real, sys\n"
        "from llmctl.cli.rich_help import defer_unused_rich_imports\n"
        "defer_unused_rich_imports()\n"
        "import typer.rich_utils as ru\n"
        f"print(sys.modules['{module}'] is real, "
        "type(ru.Markdown).__name__, type(ru.Traceback).__name__)\n"
    )
    standin = {"rich.markdown": "type _StandIn", "rich.traceback": "_StandIn type"}[module]
    assert out == f"True {standin}"
