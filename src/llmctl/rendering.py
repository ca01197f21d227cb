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
from llmctl.manifests.render import render_tree
from llmctl.manifests.writer import WriteResult, tree_files, write_files

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
    root: Path
    result: WriteResult


def render_to_disk(stack: Stack, clouds: tuple[CloudName, ...], out: Path) -> RenderReport:
    root = out / CLUSTERS_DIR
    files = tree_files(render_tree(stack, clouds))
    return RenderReport(root=root, result=write_files(root, files))


def render_to_text(stack: Stack, cloud: CloudName, gpu: bool) -> str:
    return yaml_io.dump_all(built_objects(stack, cloud, gpu))
