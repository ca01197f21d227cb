"""The conventions every command shares (docs/cli.md): kubectl's, helm's and gh's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llmctl import extras
from llmctl.cli.console import confirm
from llmctl.cli.group import CONTEXT_SETTINGS, LlmctlGroup
from llmctl.cli.main import app
from tests.support.cli import llmctl_env, run_llmctl

runner = CliRunner()


def test_bare_llmctl_prints_help_and_exits_0() -> None:
    # kubectl, helm and gh all exit 0 here; click's default is 2.
    result = run_llmctl()
    assert result.returncode == 0, result.stderr
    assert "Usage: llmctl" in result.stdout and "render" in result.stdout


@pytest.mark.parametrize("group", ["gpu", "cost", "config", "router"])
def test_bare_command_group_prints_help_and_exits_0(group: str) -> None:
    result = runner.invoke(app, [group])
    assert result.exit_code == 0, result.output
    assert f"Usage: llmctl {group}" in result.stdout


def test_dash_h_is_help_everywhere() -> None:
    for args in (["-h"], ["gpu", "status", "-h"], ["cost", "estimate", "-h"], ["render", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Usage: llmctl" in result.stdout


def _complete(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmctl"],
        capture_output=True,
        text=True,
        env=llmctl_env(env),
        timeout=60,
    )


def test_shell_completion_is_offered() -> None:
    # typer's spelling, instruction first: source_bash (click's own is bash_source).
    script = _complete(_LLMCTL_COMPLETE="source_bash")
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _llmctl_completion llmctl" in script.stdout
    words = _complete(
        _LLMCTL_COMPLETE="complete_bash", COMP_WORDS="llmctl cost estimate --clo", COMP_CWORD="3"
    )
    assert words.stdout.split() == ["--cloud"]
    listed = runner.invoke(app, ["--help"])
    assert "--install-completion" in listed.stdout


def test_dash_o_never_means_out_in_render(tmp_path: Path) -> None:
    result = run_llmctl("render", "-o", "json", cwd=tmp_path)
    assert result.returncode == 2
    assert "--out DIR" in " ".join(result.stderr.split())
    assert not any(tmp_path.iterdir()), "render -o json wrote files"


def _prompting_app() -> typer.Typer:
    demo = typer.Typer(cls=LlmctlGroup, context_settings=CONTEXT_SETTINGS)

    @demo.command()
    def go() -> None:
        confirm("Go ahead?")
        typer.echo("went")

    @demo.command()
    def other() -> None:
        pass

    return demo


def test_ctrl_c_at_a_prompt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    result = runner.invoke(_prompting_app(), ["go"])
    assert result.exit_code == 130
    assert "went" not in result.output


def test_a_prompt_without_a_terminal_says_to_pass_yes() -> None:
    result = runner.invoke(_prompting_app(), ["go"], input="")
    assert result.exit_code == 2
    assert "--yes" in result.output


def test_a_prompt_answered_no_exits_1_and_yes_goes_on() -> None:
    app_ = _prompting_app()
    no = runner.invoke(app_, ["go"], input="n\n")
    assert no.exit_code == 1 and "Aborted." in no.output
    yes = runner.invoke(app_, ["go"], input="maybe\ny\n")
    assert yes.exit_code == 0 and "went" in yes.output


def test_an_unexpected_error_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = typer.Typer(cls=LlmctlGroup)

    @demo.command()
    def boom() -> None:
        raise ZeroDivisionError("division by zero")

    @demo.command()
    def other() -> None:
        pass

    monkeypatch.delenv("LLMCTL_DEBUG", raising=False)
    result = runner.invoke(demo, ["boom"])
    assert result.exit_code == 1
    assert "llmctl hit a bug: ZeroDivisionError" in result.output
    assert "LLMCTL_DEBUG=1" in result.output
    monkeypatch.setenv("LLMCTL_DEBUG", "1")
    debug = runner.invoke(demo, ["boom"])
    assert isinstance(debug.exception, ZeroDivisionError)


def test_missing_module_names_its_extra_and_this_installation() -> None:
    error = extras.missing_extra("cloud", "google")
    text = error.format_message()
    assert "google" in text and "cloud extra" in text
    assert "'llmctl[" not in text, "llmctl on PyPI is somebody else's project"
    assert sys.executable in text
    # This test environment is installed from the checkout: the hint installs from it.
    assert "[cloud]" in extras.install_target("cloud")
    assert extras.install_target("cloud") != f"'{extras.DISTRIBUTION}[cloud]'"


def test_the_distribution_name_is_ours() -> None:
    import tomllib

    from tests.conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == extras.DISTRIBUTION
    assert project["scripts"] == {"llmctl": "llmctl.cli.entry:main"}
    readme = (REPO / "README.md").read_text()
    assert "'llmctl[" not in readme and "pip install llmctl-k8s" not in readme


def test_single_long_waits_show_a_spinner(monkeypatch: pytest.MonkeyPatch) -> None:
    # Review finding 14: one test-inference request (up to --timeout 120 s) and a GGUF header
    # read over HTTP showed nothing while they waited.
    from collections.abc import Iterator
    from contextlib import contextmanager

    from llmctl.cli import console as console_module
    from llmctl.cli import inference_cmd

    seen: list[tuple[str, bool]] = []

    @contextmanager
    def recorder(console: object, description: str, show: bool = True) -> Iterator[object]:
        seen.append((description, show))
        yield lambda text: None

    monkeypatch.setattr(console_module, "status_spinner", recorder)
    monkeypatch.setattr(inference_cmd, "status_spinner", recorder)
    runner.invoke(app, ["test-inference", "--url", "http://127.0.0.1:9", "--timeout", "5"])
    runner.invoke(app, ["plan", "--model", "http://127.0.0.1:9/m.gguf"])
    runner.invoke(app, ["plan"])  # a catalog model: nothing to wait for
    assert seen[0] == ("waiting for llama-2-7b-chat at http://127.0.0.1:9 (timeout 5 s)", True)
    assert seen[1] == ("reading the GGUF header of http://127.0.0.1:9/m.gguf", True)
    assert seen[2][1] is False


def test_router_doc_shows_the_real_bad_config_error(tmp_path: Path) -> None:
    import re

    from tests.conftest import REPO

    doc = (REPO / "docs" / "router.md").read_text()
    shown = re.search(
        r"\$ cat bad.yaml\n(.*?)\$ llmctl router serve --config bad.yaml\n(.*?)```", doc, re.S
    )
    assert shown, "docs/router.md lost its bad-config example"
    (tmp_path / "bad.yaml").write_text(shown.group(1))
    result = run_llmctl(
        "router", "serve", "--config", "bad.yaml", cwd=tmp_path, env={"COLUMNS": "100"}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == shown.group(2).strip()
