"""Reading the Stack once from layered sources, remembering where each value came from.

Sources, lowest first: the embedded defaults < a YAML file (`--config`, `$LLMCTL_CONFIG`, or
`./llmctl.yaml`) < the environment (`GPU_ENABLED`, `GPU_INSTANCE_TYPE`, `MAX_GPU_REPLICAS`) <
command-line flags. Every value remembers where it came from, so an invalid one is reported with
its field, its source (file and line, or variable, or flag) and what is allowed. Each source is
one function that returns a `Layer` (pydantic-settings keeps its sources apart the same way; it
has no file:line provenance, which is why this is not pydantic-settings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from llmctl import catalog
from llmctl.config.schema import Stack
from llmctl.errors import ConfigError

CONFIG_ENV_VAR = "LLMCTL_CONFIG"
DEFAULT_CONFIG_FILE = "llmctl.yaml"


@dataclass(frozen=True)
class Source:
    """Where a value came from, said the way a user would look for it."""

    kind: str  # default, file, env, flag
    where: str = ""

    def __str__(self) -> str:
        return self.where or self.kind


DEFAULT_SOURCE = Source("default", "built-in default")

KeyPath = tuple[str, ...]  # a setting's place in the file: ("gpu", "enabled")


@dataclass
class Layer:
    """One source's values, as a nested dict in the file's spelling, with each leaf's origin."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[KeyPath, Source] = field(default_factory=dict)

    def set(self, path: Sequence[str], value: Any, source: Source) -> None:
        node = self.values
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[path[-1]] = value
        self.origins[tuple(path)] = source


@dataclass(frozen=True)
class LoadedStack:
    stack: Stack
    # Each value that differs from the built-in default, with where it was set.
    changed: dict[str, tuple[Any, Source]]
    config_file: Path | None


def _leaves(data: Any, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield prefix, data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _file_layer(path: Path) -> Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}",
            hint=f"pass an existing file with --config, or unset ${CONFIG_ENV_VAR}",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)",
            hint="the config is a YAML file such as llmctl.yaml; check that --config (or "
            f"${CONFIG_ENV_VAR}) names the right file",
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    layer = Layer()
    if data is None:
        return layer
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config file must be a mapping of settings")
    if not data:  # `{}`: a file that sets nothing, like an empty one
        return layer
    lines = _line_numbers(root)
    for leaf, value in _leaves(data):
        layer.set(leaf, value, Source("file", f"{path}:{lines.get(leaf, 1)}"))
        # The places inside a list (its items and their fields), so an error there names
        # the item's own line (`_origin` takes the closest place).
        for place, line in lines.items():
            if len(place) > len(leaf) and place[: len(leaf)] == leaf:
                layer.origins[place] = Source("file", f"{path}:{line}")
    return layer


def _line_numbers(node: yaml.Node | None, prefix: KeyPath = ()) -> dict[KeyPath, int]:
    lines: dict[KeyPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(_line_numbers(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        # A list is one setting (one leaf), but an error inside an item (router.apiKeys.keys.1)
        # is reported at that item's line.
        for index, item in enumerate(node.value):
            path = (*prefix, str(index))
            lines[path] = item.start_mark.line + 1
            lines.update(_line_numbers(item, path))
    return lines


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer = Layer()
    if "GPU_ENABLED" in env:
        raw = env["GPU_ENABLED"].strip().lower()
        if raw not in _TRUE | _FALSE:
            raise ConfigError(
                f"GPU_ENABLED={env['GPU_ENABLED']!r} is not a boolean",
                hint="use true or false (also accepted: 1/0, yes/no, on/off)",
            )
        layer.set(
            ("gpu", "enabled"), raw in _TRUE, Source("env", "environment variable GPU_ENABLED")
        )
    if "MAX_GPU_REPLICAS" in env:
        raw = env["MAX_GPU_REPLICAS"].strip()
        try:
            replicas = int(raw)
        except ValueError:
            raise ConfigError(
                f"MAX_GPU_REPLICAS={raw!r} is not a whole number",
                hint="set it to the most GPU pods per cloud, for example 2",
            ) from None
        layer.set(
            ("gpu", "maxReplicas"), replicas, Source("env", "environment variable MAX_GPU_REPLICAS")
        )
    if "GPU_INSTANCE_TYPE" in env:
        name = env["GPU_INSTANCE_TYPE"].strip()
        cloud = catalog.cloud_of_gpu_instance_type(name)
        if cloud is None:
            known = ", ".join(
                f"{c.value}: {' '.join(catalog.gpu_instance_types(c))}" for c in catalog.CLOUDS
            )
            raise ConfigError(
                f"GPU_INSTANCE_TYPE={name!r} is not a GPU instance type llmctl knows",
                hint=f"allowed values: {known}",
            )
        # An instance type names its cloud, so it replaces that cloud's default only.
        layer.set(
            ("gpu", "instanceTypes", cloud.value),
            name,
            Source("env", "environment variable GPU_INSTANCE_TYPE"),
        )
    return layer


def parse_set_flags(assignments: Sequence[str]) -> Layer:
    """`--set gpu.maxReplicas=3` flags, values parsed as YAML scalars, as in `helm --set`."""
    layer = Layer()
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise ConfigError(
                f"--set {assignment!r} is not KEY=VALUE",
                hint="for example --set gpu.maxReplicas=3 (run `llmctl config show` for keys)",
            )
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        layer.set(key.split("."), value, Source("flag", f"--set {key}"))
    return layer


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _origin(layers: Sequence[Layer], loc: KeyPath) -> Source:
    """The highest layer that set this path, or any value under or above it; within a layer,
    the closest place (an item of a list before the list)."""
    for layer in reversed(layers):
        best: tuple[int, Source] | None = None
        for path, source in layer.origins.items():
            shorter = min(len(path), len(loc))
            if path[:shorter] == loc[:shorter] and (best is None or shorter > best[0]):
                best = (shorter, source)
        if best is not None:
            return best[1]
    return DEFAULT_SOURCE


def _error_message(exc: ValidationError, layers: Sequence[Layer]) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in err["loc"])
    field_name = ".".join(loc) or "(top level)"
    source = _origin(layers, loc)
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent)
        return ConfigError(
            f"{source}: unknown setting {field_name!r}",
            hint=f"allowed keys here: {', '.join(allowed)}" if allowed else None,
        )
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    # Rules across settings carry their own hint (config/router_settings.py's `refusal`).
    hint = err.get("ctx", {}).get("hint")
    return ConfigError(f"{source}: invalid {field_name}{shown}: {message}", hint=hint)


def _allowed_keys(parent: KeyPath) -> list[str]:
    model: type[BaseModel] = Stack
    for key in parent:
        if key.isdigit():  # an item of a list of settings (router.apiKeys.keys.0)
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        annotation = fields[key].annotation if key in fields else None
        found = _model_in(annotation)
        if found is None:
            return []
        model = found
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds: itself, or its items (tuple[X, ...]), or X of X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def load_stack(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Layer | None = None,
) -> LoadedStack:
    """Read the stack from every source, once, and validate it."""
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    layers = [
        _file_layer(path) if path is not None else Layer(),
        _env_layer(env),
        flags or Layer(),
    ]
    defaults = Stack().model_dump(by_alias=True, mode="json")
    merged = defaults
    for layer in layers:
        merged = _merge(merged, layer.values)
    try:
        stack = Stack.model_validate(merged)
    except ValidationError as exc:
        raise _error_message(exc, layers) from None
    effective = stack.model_dump(by_alias=True, mode="json")
    default_leaves = dict(_leaves(defaults))
    changed = {
        ".".join(path): (value, _origin(layers, path))
        for path, value in _leaves(effective)
        if default_leaves.get(path, object()) != value
    }
    return LoadedStack(stack=stack, changed=changed, config_file=path)
