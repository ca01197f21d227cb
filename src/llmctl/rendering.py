"""`llmctl render` as a plain function: config -> tree on disk, or one overlay's objects as YAML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.errors import ConfigError
from llmctl.manifests import yaml_io
from llmctl.manifests.build import built_objects
from llmctl.manifests.helm_values import CHART_DIR, values_files
from llmctl.manifests.render import render_tree
from llmctl.manifests.writer import WriteResult, tree_files, values_files_text, write_files

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


@dataclass(frozen=True)
class RenderReport:
    root: Path  # clusters/
    chart_dir: Path  # charts/llm-router/, where the values files go
    result: WriteResult


def render_to_disk(stack: Stack, clouds: tuple[CloudName, ...], out: Path) -> RenderReport:
    """Write the Kustomize trees under clusters/ and the Helm values files beside the chart."""
    root = out / CLUSTERS_DIR
    chart_dir = out / CHART_DIR
    trees = write_files(root, tree_files(render_tree(stack, clouds)))
    values = write_files(chart_dir, values_files_text(values_files(stack, clouds)))
    result = WriteResult(
        written=trees.written + values.written, unchanged=trees.unchanged + values.unchanged
    )
    return RenderReport(root=root, chart_dir=chart_dir, result=result)


def render_to_text(stack: Stack, cloud: CloudName, gpu: bool) -> str:
    return yaml_io.dump_all(built_objects(stack, cloud, gpu))
