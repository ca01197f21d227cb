"""Running llmctl as a user does: a separate process, from the source tree under test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


def llmctl_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_", "MAX_GPU", "LLMCTL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_llmctl(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        capture_output=True,
        text=True,
        env=llmctl_env(env),
        cwd=cwd,
        input=input,
        timeout=120,
    )


def python_on_src(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter that imports llmctl from this source tree and nothing from
    the test process's environment: what an import pulls in shows in its `sys.modules`."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def command_tree(app: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of a Typer app with its path, as the CLI resolves them: through each
    group's list_commands/get_command, so commands the root loads lazily (cli/lazy.py) count."""
    import typer
    from typer._click.core import Context

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        if isinstance(command, typer.core.TyperGroup):
            ctx = Context(command, info_name=path[-1] if path else "llmctl")
            for name in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, name), (*path, name))

    yield from walk(typer.main.get_command(app), ())
