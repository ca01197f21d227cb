"""A llama pod's start-up stages, said once in one line format and once as Prometheus metrics.

Log lines are logfmt, one per stage, all starting with `llmctl-stage`, so
`kubectl logs POD -c fetch-model | grep llmctl-stage` (or a log query) finds every one:

    llmctl-stage stage=fetch seconds=11.92 bytes=4081004224 mb_per_s=342.4 connections=16 ...

The same figures are written in Prometheus' text format (the node exporter's textfile format),
as gauges named `llmctl_pod_stage_seconds{stage=...}`, `llmctl_model_fetch_bytes` and
`llmctl_model_fetch_megabytes_per_second`. Standard library only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "llmctl-stage"
STAGES = ("image_start", "fetch", "load", "first_ready")
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-]+$")


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    fields: Mapping[str, str | int | float] = field(default_factory=dict)


def _value(value: str | int | float) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    text = str(value)
    return text if _BARE.match(text) else '"' + text.replace('"', '\\"') + '"'


def stage_line(stage: Stage) -> str:
    parts = [PREFIX, f"stage={stage.name}", f"seconds={_value(round(stage.seconds, 3))}"]
    parts += [f"{key}={_value(value)}" for key, value in stage.fields.items()]
    return " ".join(parts)


def parse_stage_line(line: str) -> dict[str, str]:
    """The fields of one stage line (for tests and for anyone reading the logs by script)."""
    if not line.startswith(PREFIX + " "):
        raise ValueError(f"not a stage line: {line!r}")
    found: dict[str, str] = {}
    for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line):
        raw = match.group(2)
        found[match.group(1)] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
    return found


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(stages: list[Stage], labels: Mapping[str, str]) -> str:
    """The stages as Prometheus gauges, one family per figure."""
    base = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
    sep = "," if base else ""
    lines = [
        "# HELP llmctl_pod_stage_seconds Seconds each start-up stage of a llama pod took.",
        "# TYPE llmctl_pod_stage_seconds gauge",
    ]
    lines += [
        f'llmctl_pod_stage_seconds{{{base}{sep}stage="{s.name}"}} {s.seconds:.3f}' for s in stages
    ]
    fetch = next((s for s in stages if s.name == "fetch"), None)
    if fetch is not None:
        lines += [
            "# HELP llmctl_model_fetch_bytes Bytes of the model fetched to local disk.",
            "# TYPE llmctl_model_fetch_bytes gauge",
            f"llmctl_model_fetch_bytes{{{base}}} {int(fetch.fields.get('bytes', 0))}",
            "# HELP llmctl_model_fetch_megabytes_per_second The model fetch's rate (1 MB = 1e6 B).",
            "# TYPE llmctl_model_fetch_megabytes_per_second gauge",
            f"llmctl_model_fetch_megabytes_per_second{{{base}}} "
            f"{float(fetch.fields.get('mb_per_s', 0.0)):.3f}",
        ]
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, stages: list[Stage], labels: Mapping[str, str]) -> None:
    """Written whole, then renamed: a scraper never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(metrics_text(stages, labels), encoding="utf-8")
    part.replace(path)


def read_metrics_stages(path: Path) -> list[Stage]:
    """The stages an earlier container wrote (the fetcher's, for the stage watcher)."""
    stages: list[Stage] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return stages
    for match in re.finditer(r'^llmctl_pod_stage_seconds\{[^}]*stage="(\w+)"\} (\S+)$', text, re.M):
        stages.append(Stage(match.group(1), float(match.group(2))))
    return stages


_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def read_metrics_record(path: Path) -> tuple[list[Stage], dict[str, str]]:
    """What an earlier container wrote with `write_metrics` (the fetcher's record, for the stage
    watcher): its stages, the fetch's bytes and rate among its fields, and its labels."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return [], {}
    found: list[Stage] = []
    labels: dict[str, str] = {}
    fetch_fields: dict[str, str | int | float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, value = match.groups()
        pairs = {
            k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            for k, v in _LABEL.findall(raw_labels or "")
        }
        stage = pairs.pop("stage", None)
        labels.update(pairs)
        if name == "llmctl_pod_stage_seconds" and stage:
            found.append(Stage(stage, float(value)))
        elif name == "llmctl_model_fetch_bytes":
            fetch_fields["bytes"] = int(float(value))
        elif name == "llmctl_model_fetch_megabytes_per_second":
            fetch_fields["mb_per_s"] = float(value)
    return [
        Stage(s.name, s.seconds, fetch_fields) if s.name == "fetch" else s for s in found
    ], labels


def seconds_since_boot(now: float | None = None, proc_stat: Path = Path("/proc/stat")) -> float:
    """Seconds since the node booted (its kernel's btime): on a node the autoscaler just started,
    this is the node's start, its join and the image pull before the first container ran."""
    try:
        for line in proc_stat.read_text(encoding="utf-8").splitlines():
            if line.startswith("btime "):
                return (time.time() if now is None else now) - float(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1.0
