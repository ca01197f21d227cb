"""`llmctl render` as a plain function: config -> tree on disk, or one overlay's objects as YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from llmctl.manifests import yaml_io
from llmctl.manifests.build import built_objects
from llmctl.manifests.deploy_checks import deploy_warnings
from llmctl.manifests.helm_values import CHART_DIR, values_files
from llmctl.manifests.render import render_tree
from llmctl.manifests.writer import (
    WriteResult,
    edited_files,
    load_record,
    recorded,
    save_record,
    tree_files,
    values_files_text,
    write_files,
)
from llmctl.plan.vram import FitLevel, check_gpu_fit

CLUSTERS_DIR = "clusters"


def parse_clouds(value: str) -> tuple[CloudName, ...]:
    if value == "all":
        return catalog.CLOUDS
    try:
        return (CloudName(value),)
    except ValueError:
        allowed = ", ".join([*(c.value for c in catalog.CLOUDS), "all"])
        raise ConfigError(
            f"--cloud {value!r} is not a cloud llmctl knows", hint=f"use one of: {allowed}"
        ) from None


def gpu_fit_warnings(stack: Stack, clouds: tuple[CloudName, ...]) -> list[str]:
    """The GPU overlay's memory check (the one `llmctl plan` makes): a config that cannot fit
    its GPU is refused; a tight or unchecked one is rendered with a warning."""
    warnings: list[str] = []
    for cloud in clouds:
        report = check_gpu_fit(stack, cloud)
        if report.level is FitLevel.REFUSE:
            raise ConfigError(
                f"the GPU overlay would not fit its GPU: {report.message}",
                hint="`llmctl plan` shows the memory breakdown",
            )
        # Once, not once per cloud, when the clouds share the model (review 2026-12-06, N11).
        if report.level in (FitLevel.WARN, FitLevel.UNKNOWN) and report.message not in warnings:
            warnings.append(report.message)
    return warnings


@dataclass(frozen=True)
class RenderReport:
    root: Path  # clusters/
    chart_dir: Path  # charts/llm-router/, where the values files go
    result: WriteResult
    warnings: list[str]
    # The chart itself, copied beside its values files so `helm install ... charts/llm-router`
    # works outside a checkout; None where the destination is the chart's own source.
    chart: WriteResult | None = None
    # The checkout whose templates/ and charts/ were read; None for the installed copies.
    checkout: Path | None = None


class EditedFilesError(LlmctlError):
    """Render would overwrite files that someone changed after render wrote them."""


# The values files render writes; every other file of the chart ships in the package as it is.
_GENERATED_VALUES = re.compile(r"^values-[a-z0-9]+-(cpu|gpu)\.yaml$")


def chart_source() -> Path:
    from llmctl.assets import asset_dir

    return asset_dir("charts") / CHART_DIR.name


def chart_files() -> dict[Path, str]:
    """The Helm chart's own files (not the generated values files), relative to its directory."""
    source = chart_source()
    return {
        path.relative_to(source): path.read_text(encoding="utf-8")
        for path in sorted(source.rglob("*"))
        if path.is_file()
        and not _GENERATED_VALUES.match(path.name)
        and "__pycache__" not in path.parts
    }


def render_to_disk(
    stack: Stack, clouds: tuple[CloudName, ...], out: Path, force: bool = False
) -> RenderReport:
    """Write the Kustomize trees under clusters/ and the Helm values files beside the chart, and
    the chart itself where `out` is not the checkout it comes from.

    Nothing is written when a file to be replaced was edited since render wrote it (see
    manifests/writer.py), unless `force`.
    """
    from llmctl.assets import checkout_root

    # Checked before anything is written: a refused config leaves the tree as it was.
    # Written for both tiers: the tree holds each cloud's GPU overlay whatever gpu.enabled says.
    warnings = gpu_fit_warnings(stack, clouds) + deploy_warnings(stack, clouds, gpu=True)
    root = out / CLUSTERS_DIR
    chart_dir = out / CHART_DIR
    trees = tree_files(render_tree(stack, clouds))
    values = values_files_text(values_files(stack, clouds))
    chart = chart_files() if chart_dir.resolve() != chart_source().resolve() else None
    every: dict[Path, str] = {Path(CLUSTERS_DIR, p): t for p, t in trees.items()}
    every.update({Path(CHART_DIR, p): t for p, t in values.items()})
    every.update({Path(CHART_DIR, p): t for p, t in (chart or {}).items()})
    record = load_record(out)
    edited = edited_files(out, every, record)
    if edited and not force:
        shown = ", ".join(str(out / p) for p in edited[:3])
        more = f" and {len(edited) - 3} more" if len(edited) > 3 else ""
        raise EditedFilesError(
            f"render would overwrite {len(edited)} file(s) changed since it wrote them: "
            f"{shown}{more}; nothing was written",
            hint="put the change in llmctl.yaml (or, in a checkout, in templates/ or "
            "charts/llm-router/) so render keeps it, or pass --force to overwrite",
        )
    tree_result = write_files(root, trees)
    values_result = write_files(chart_dir, values)
    chart_result = write_files(chart_dir, chart) if chart is not None else None
    save_record(out, {**record, **recorded(every)})
    result = WriteResult(
        written=tree_result.written + values_result.written,
        unchanged=tree_result.unchanged + values_result.unchanged,
    )
    return RenderReport(
        root=root,
        chart_dir=chart_dir,
        result=result,
        warnings=warnings,
        chart=chart_result,
        checkout=checkout_root(),
    )


def render_to_text(stack: Stack, cloud: CloudName, gpu: bool) -> tuple[str, list[str]]:
    warnings = gpu_fit_warnings(stack, (cloud,)) if gpu else []
    warnings += deploy_warnings(stack, (cloud,), gpu)
    return yaml_io.dump_all(built_objects(stack, cloud, gpu)), warnings
