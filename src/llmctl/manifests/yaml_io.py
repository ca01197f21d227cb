"""Canonical YAML: the one way llmctl writes Kubernetes objects and values files.

Keys sorted, block style, multi-line strings as literal blocks, written by libyaml's emitter
(the pure-Python one was most of `llmctl render`'s time). The same input always gives the same
bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

# libyaml where PyYAML was built with it (its wheels are), else the same in pure Python.
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def dump(data: Any, sort_keys: bool = True) -> str:
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=sort_keys,
        default_flow_style=False,
        width=120,
        allow_unicode=True,
    )


def dump_all(documents: Iterable[Any], sort_keys: bool = True) -> str:
    return "".join("---\n" + dump(doc, sort_keys) for doc in documents)


def load_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
