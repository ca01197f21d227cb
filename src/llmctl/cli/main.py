"""The `llmctl` entry point: one Typer app with a sub-app or command per module.

The conventions every command shares (help, exit codes, errors) live in `cli/group.py`.
"""

from __future__ import annotations

import logging

import typer

from llmctl import __version__
from llmctl.cli import (
    config_cmd,
    cost_cmd,
    gpu_cmd,
    inference_cmd,
    model_cmd,
    plan_cmd,
    render_cmd,
    router_cmd,
)
from llmctl.cli.group import CONTEXT_SETTINGS, LlmctlGroup

app = typer.Typer(
    name="llmctl",
    help="Serve llama.cpp models on Kubernetes across AWS, Azure and GCP, with GPUs only when "
    "they pay for themselves.",
    cls=LlmctlGroup,
    context_settings=CONTEXT_SETTINGS,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion, and _LLMCTL_COMPLETE=bash_source|zsh_source|...
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Serve llama.cpp models on Kubernetes across AWS, Azure and GCP."""


app.command("render")(render_cmd.render)
app.command("plan")(plan_cmd.plan)
app.add_typer(config_cmd.app, name="config")
app.add_typer(cost_cmd.app, name="cost")
app.add_typer(router_cmd.app, name="router")
app.add_typer(gpu_cmd.app, name="gpu")
app.add_typer(model_cmd.app, name="model")
app.command("test-inference")(inference_cmd.test_inference)


# The cloud SDKs log their own retries and credential searches (azure.identity prints a
# 15-line "DefaultAzureCredential failed" report) before llmctl says the same in one line.
SDK_LOGGERS = (
    "azure",
    "google",
    "google_auth_httplib2",
    "botocore",
    "boto3",
    "urllib3",
    "kubernetes",
)


def quiet_sdk_loggers() -> None:
    """Give the SDKs' loggers a handler that drops records, so Python's last-resort handler does
    not print their warnings on stderr. LLMCTL_DEBUG=1 keeps them."""
    import os

    if os.environ.get("LLMCTL_DEBUG"):
        return
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def main() -> None:
    quiet_sdk_loggers()
    app(prog_name="llmctl")
