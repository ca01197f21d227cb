"""Canonical YAML: the one way llmctl writes Kubernetes objects and values files.

Keys sorted, block style, sequences indented under their key (as yamllint expects), multi-line
strings as literal blocks. The same input always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # PyYAML writes "key:\n- item"; indenting the dash keeps yamllint's default rules happy.
        super().increase_indent(flow, False)


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
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]
