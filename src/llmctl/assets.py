"""Where the files that ship beside the code live: `templates/` and `charts/`.

In a wheel they are package data under `llmctl/_assets/`; in a source checkout they sit at the top
of the repository, where people look for them.

Run inside an llmctl checkout, llmctl reads that checkout's own `templates/` and `charts/`, even
when it was installed from a wheel (`pip install .` copies both into site-packages at install
time): the checkout is where its user edits them, and a render that read the frozen copy would
ignore those edits and overwrite the chart with it (review 2026-12-06, N1).
"""

from __future__ import annotations

from pathlib import Path

from llmctl.extras import DISTRIBUTION

_PACKAGE = Path(__file__).resolve().parent
# What makes a directory an llmctl checkout: its pyproject names the distribution, and both
# asset directories are there.
_MARKERS = ("templates", "charts/llm-router/Chart.yaml")


def is_checkout(directory: Path) -> bool:
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file() or not all((directory / m).exists() for m in _MARKERS):
        return False
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return f'name = "{DISTRIBUTION}"' in text


def checkout_root(start: Path | None = None) -> Path | None:
    """The llmctl checkout that contains `start` (default: the working directory), if any."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the working directory was deleted
        return None
    for directory in (here, *here.parents):
        if is_checkout(directory):
            return directory
    return None


def asset_dir(name: str) -> Path:
    """`templates` or `charts`: the working directory's checkout's, else the installed ones."""
    checkout = checkout_root()
    candidates = [_PACKAGE / "_assets" / name, _PACKAGE.parent.parent / name]
    if checkout is not None:
        candidates.insert(0, checkout / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"llmctl's {name}/ directory is missing from this installation")
