"""`llmctl --help`, `render` and `config show` never load the heavy clients.

Measured in a fresh process: an import anywhere at module level would show up here, and in the
start-up time benchmarks/cli.py reports.
"""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_llmctl

HEAVY = (
    "boto3",
    "botocore",
    "google.cloud",
    "azure",
    "kubernetes",
    "fastapi",
    "uvicorn",
    "httpx",
    "aiohttp",
    "starlette",
    "gguf",
    "numpy",
)

PROBE = """
import json, sys, runpy
sys.argv = ["llmctl", *json.loads(sys.argv[1])]
try:
    runpy.run_module("llmctl", run_name="__main__")
except SystemExit:
    pass
sys.__stdout__.write("\\nMODULES=" + json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["render", "--out", "{tmp}"],
        ["render", "--cloud", "aws", "--gpu", "--stdout"],
        ["config", "show"],
        ["test-inference", "--help"],
    ],
    ids=["help", "render", "render-stdout", "config-show", "test-inference-help"],
)
def test_command_loads_no_heavy_module(args: list[str], tmp_path: object) -> None:
    import subprocess
    import sys

    from tests.support.cli import llmctl_env

    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=llmctl_env(),
        timeout=60,
    )
    assert "MODULES=" in result.stdout, result.stderr
    modules = json.loads(result.stdout.rsplit("MODULES=", 1)[1])
    loaded = [
        m
        for m in modules
        if m.split(".")[0] in {h.split(".")[0] for h in HEAVY}
        and any(m == h or m.startswith(h + ".") for h in HEAVY)
    ]
    assert loaded == [], f"`llmctl {' '.join(args)}` imported {loaded[:5]}"


def test_help_lists_the_commands() -> None:
    result = run_llmctl("--help")
    assert result.returncode == 0
    for command in ("render", "config"):
        assert command in result.stdout


# What `--help` needs is typer and rich; the pydantic Stack model alone took ~150 ms of a 317 ms
# `llmctl --help` in review 2026-12-06 (N14), and no help text needs it, nor YAML or Jinja.
# (A subcommand's --help does load pydantic: typer 0.29 itself builds its parameter types with
# pydantic TypeAdapters, in typer/_adapters.py, so only llmctl's own modules are checked there.)
NOT_FOR_HELP = ("yaml", "jinja2", "llmctl.config", "llmctl.manifests", "llmctl.cost")
# Nor does the root help need the commands' own modules (cli/lazy.py), nor the parts of Rich that
# typer.rich_utils imports for markdown help and pretty tracebacks (cli/rich_help.py): together
# they were half of `llmctl --help` (benchmarks/cli.py).
COMMAND_MODULES = tuple(
    f"llmctl.cli.{name}_cmd"
    for name in ("render", "plan", "inference", "config", "cost", "router", "gpu", "model")
)
UNUSED_RICH = ("rich.markdown", "rich.traceback", "markdown_it", "pygments")


@pytest.mark.parametrize(
    ("args", "banned"),
    [
        (["--help"], ("pydantic", *NOT_FOR_HELP, *COMMAND_MODULES, *UNUSED_RICH)),
        (["test-inference", "--help"], (*NOT_FOR_HELP, *UNUSED_RICH)),
        (["gpu", "--help"], (*NOT_FOR_HELP, *UNUSED_RICH)),
    ],
)
def test_help_loads_no_config_model_yaml_or_jinja(args: list[str], banned: tuple[str, ...]) -> None:
    import subprocess
    import sys

    from tests.support.cli import llmctl_env

    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=llmctl_env(),
        timeout=60,
    )
    modules = json.loads(result.stdout.rsplit("MODULES=", 1)[1])
    loaded = [m for m in modules if any(m == n or m.startswith(n + ".") for n in banned)]
    assert loaded == [], f"`llmctl {' '.join(args)}` imported {loaded[:5]}"
