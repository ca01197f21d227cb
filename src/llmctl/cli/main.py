"""The `llmctl` entry point: one Typer app with a sub-app or command per module.

The conventions every command shares (help, exit codes, errors) live in `cli/group.py`.
"""

from __future__ import annotations

import logging

import typer

from llmctl import __version__
from llmctl.cli.group import CONTEXT_SETTINGS, LlmctlGroup
from llmctl.cli.lazy import LazyCommand
from llmctl.cli.rich_help import defer_unused_rich_imports


class RootGroup(LlmctlGroup):
    # In the order `llmctl --help` lists them. Each module is imported only when its command
    # runs or shows its own help (cli/lazy.py).
    lazy_commands = (
        LazyCommand(
            "render",
            "llmctl.cli.render_cmd:render",
            "Render per-cloud Kustomize bases and GPU overlays from the Stack config.",
        ),
        LazyCommand(
            "plan",
            "llmctl.cli.plan_cmd:plan",
            "Check whether a model, context and parallelism fit the GPU, and the most that fits.",
        ),
        LazyCommand(
            "test-inference",
            "llmctl.cli.inference_cmd:test_inference",
            "Send chat completions to the router and report status, tier, backend and speed.",
        ),
        LazyCommand("config", "llmctl.cli.config_cmd:app", "Inspect llmctl's configuration."),
        LazyCommand(
            "cost", "llmctl.cli.cost_cmd:app", "Estimate what serving costs on each cloud."
        ),
        LazyCommand(
            "router",
            "llmctl.cli.router_cmd:app",
            "The OpenAI-compatible router in front of the llama.cpp servers.",
        ),
        LazyCommand(
            "gpu",
            "llmctl.cli.gpu_cmd:app",
            "Create, inspect and remove scale-to-zero spot GPU node pools.",
        ),
        LazyCommand(
            "model",
            "llmctl.cli.model_cmd:app",
            "Copy models into an object store beside the cluster, and fetch them in the pods.",
        ),
    )


app = typer.Typer(
    name="llmctl",
    help="Serve llama.cpp models on Kubernetes across AWS, Azure and GCP, with GPUs only when "
    "they pay for themselves.",
    cls=RootGroup,
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
    defer_unused_rich_imports()
    app(prog_name="llmctl")
