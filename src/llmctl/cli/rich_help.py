"""Typer's Rich help, without importing the two parts of Rich that llmctl's help never uses.

typer.rich_utils, which Typer imports to print any help or usage error, imports rich.markdown
(markdown-it-py) and rich.traceback (pygments) at its top: for `rich_markup_mode="markdown"` and
for pretty tracebacks. llmctl uses Rich markup and turns pretty tracebacks off, yet those two
imports were a third of `llmctl --help` (benchmarks/cli.py). `defer_unused_rich_imports()` lets
typer.rich_utils import stand-ins for the two names it takes from them, `Markdown` and
`Traceback`, which import the real class the first time they are called or asked for an
attribute. Only that one import sees the stand-ins: any other import of rich.markdown or
rich.traceback, before or after, gets the real module.

tests/cli/test_rich_help.py checks that every help page and usage error is the same with and
without it. Typer is pinned below 0.30 (pyproject.toml), so a release that changes these
imports arrives as a deliberate bump that runs that test.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

TYPER_RICH_UTILS = "typer.rich_utils"
# The module typer.rich_utils imports, and the one name it takes from it.
DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


class _StandIn(type):
    """The class of a stand-in: calling it, or reading an attribute it does not have (such as
    `Traceback.from_exception`), imports the real class and hands the call on."""

    real_module: str

    def real(cls) -> Any:
        return getattr(importlib.import_module(cls.real_module), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, attribute: str) -> Any:
        return getattr(cls.real(), attribute)


def stand_in_module(module: str, name: str) -> ModuleType:
    stand_in = ModuleType(module, f"Stand-in for {module} while typer.rich_utils is imported.")
    setattr(stand_in, name, _StandIn(name, (), {"real_module": module}))
    return stand_in


class _WithStandIns(importlib.abc.Loader):
    """typer.rich_utils' own loader, run with the stand-ins in sys.modules, and only then."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        stand_ins = {
            name: stand_in_module(name, attribute)
            for name, attribute in DEFERRED.items()
            if name not in sys.modules
        }
        sys.modules.update(stand_ins)
        try:
            self._loader.exec_module(module)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]


class _RichUtilsFinder(importlib.abc.MetaPathFinder):
    """Finds typer.rich_utils the usual way, once, and gives it the loader above."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != TYPER_RICH_UTILS:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithStandIns(spec.loader)
        return spec


def defer_unused_rich_imports() -> None:
    """Install the finder, unless typer.rich_utils is already imported or the finder is in."""
    if TYPER_RICH_UTILS in sys.modules:
        return
    if any(isinstance(finder, _RichUtilsFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _RichUtilsFinder())
