"""The README's examples are real: each documented `llmctl` command line parses, and the outputs
it shows are what the commands print."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli.main import app
from tests.support.cli import run_llmctl

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
runner = CliRunner()


def _command_lines() -> list[str]:
    lines = re.findall(r"^(?:\$ )?(llmctl [^\n#|]*)", TEXT, flags=re.M)
    return sorted({line.strip() for line in lines if not line.startswith("llmctl serves")})


@pytest.mark.parametrize("line", _command_lines())
def test_every_documented_command_line_parses(line: str) -> None:
    # --help is eager, but options are parsed first: a misspelt one fails here with exit 2.
    args = shlex.split(line)[1:]
    result = runner.invoke(app, [*args, "--help"], env={})
    assert result.exit_code == 0, f"`{line}`: {result.output}"


def test_render_example_output(tmp_path: Path) -> None:
    shown = re.search(r"\$ llmctl render[^\n]*\n(Rendered[^\n]*)", TEXT)
    assert shown
    result = run_llmctl("render", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == shown.group(1)


def test_config_show_example_output() -> None:
    block = re.search(
        r"\$ GPU_ENABLED=1 llmctl config show --set gpu.maxReplicas=3 \| tail -4\n(.*?)```",
        TEXT,
        flags=re.S,
    )
    assert block
    result = run_llmctl("config", "show", "--set", "gpu.maxReplicas=3", env={"GPU_ENABLED": "1"})
    assert result.stdout.splitlines()[-4:] == block.group(1).splitlines()


def test_config_error_example_output(tmp_path: Path) -> None:
    block = re.search(
        r"\$ cat llmctl.yaml\n(.*?)\$ llmctl render\n(.*?)\$ echo \$\?\n(\d)", TEXT, re.S
    )
    assert block
    (tmp_path / "llmctl.yaml").write_text(block.group(1))
    result = run_llmctl("render", cwd=tmp_path, env={"COLUMNS": "80"})
    assert str(result.returncode) == block.group(3)
    assert result.stderr.rstrip("\n") == block.group(2).rstrip("\n")
