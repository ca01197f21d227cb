"""`llmctl render`: the Kustomize trees (and Helm values) for each cloud."""

from __future__ import annotations

from pathlib import Path

import typer

from llmctl.cli import options


def render(
    cloud: str = typer.Option("all", "--cloud", help="aws, azure, gcp or all."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Directory to write clusters/ into."),
    stdout: bool = typer.Option(
        False, "--stdout", help="Print the built objects of one cloud instead of writing files."
    ),
    gpu: bool | None = typer.Option(
        None, "--gpu/--no-gpu", help="With --stdout: the GPU overlay (default: gpu.enabled)."
    ),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Render per-cloud Kustomize bases and GPU overlays from the Stack config."""
    raise NotImplementedError
