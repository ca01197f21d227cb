"""`llmctl render`: the Kustomize trees (and Helm values) for each cloud."""

from __future__ import annotations

from pathlib import Path

import typer

from llmctl.cli import options


def render(
    cloud: str = typer.Option("all", "--cloud", help="aws, azure, gcp or all."),
    out: Path = typer.Option(
        Path("."),
        "--out",
        help="Directory to write clusters/ and charts/ into.",
        file_okay=False,
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        hidden=True,
        help="Refused: render writes files. -o means --output in every llmctl command, as in "
        "kubectl, so it never means --out here.",
    ),
    stdout: bool = typer.Option(
        False, "--stdout", help="Print one cloud's built objects instead of writing files."
    ),
    gpu: bool | None = typer.Option(
        None, "--gpu/--no-gpu", help="Turn the GPU tier on or off (default: gpu.enabled)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Overwrite files changed since render wrote them (render refuses by default).",
    ),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Render per-cloud Kustomize bases and GPU overlays from the Stack config.

    Writes clusters/<cloud>/base, clusters/<cloud>/overlays/gpu and clusters/components/nvidia-gpu,
    and the Helm chart's charts/llm-router/values-<cloud>-{cpu,gpu}.yaml from the same config.
    With --stdout, prints what `kubectl kustomize` gives for one cloud, ready for
    `kubectl apply -f -`: the GPU overlay when the GPU tier is on, else the base.

    Inside an llmctl checkout it reads the checkout's templates/ and charts/ and leaves the chart
    alone; elsewhere it copies the chart beside its values files. It never overwrites a file
    changed since it wrote it, unless --force.
    """
    from llmctl.errors import ConfigError
    from llmctl.manifests.rendering import parse_clouds, render_to_disk, render_to_text

    if output is not None:
        raise ConfigError(
            f"render has no --output/-o (got {output!r}): it writes files",
            hint="--out DIR chooses where they go; --stdout --cloud aws prints one cloud's "
            "objects as YAML",
        )
    loaded = options.load(config, sets, gpu)
    clouds = parse_clouds(cloud)
    if stdout:
        if len(clouds) != 1:
            raise ConfigError("--stdout prints one cloud", hint="add --cloud aws, azure or gcp")
        text, warnings = render_to_text(loaded.stack, clouds[0], loaded.stack.gpu.enabled)
        _warn(warnings)
        typer.echo(text, nl=False)
        return
    report = render_to_disk(loaded.stack, clouds, out, force=force)
    _warn(report.warnings)
    written, unchanged = len(report.result.written), len(report.result.unchanged)
    typer.echo(
        f"Rendered {', '.join(c.value for c in clouds)} into {report.root}/ and "
        f"{report.chart_dir}/: "
        f"{written} file(s) written, {unchanged} unchanged."
    )
    for path in report.result.written:
        typer.echo(f"  wrote {path}")
    helm = (
        f"helm install <release> {report.chart_dir} -f {report.chart_dir}/values-<cloud>-gpu.yaml"
    )
    if report.chart is not None:
        typer.echo(
            f"Helm chart in {report.chart_dir}/: {len(report.chart.written)} file(s) written, "
            f"{len(report.chart.unchanged)} unchanged ({helm})."
        )
    else:
        typer.echo(
            f"Helm chart in {report.chart_dir}/: this checkout's own, left as it is ({helm})."
        )


def _warn(warnings: list[str]) -> None:
    # stderr, so `render --stdout | kubectl apply -f -` still gets clean YAML.
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
