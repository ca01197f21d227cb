"""Where the files that ship beside the code live: `templates/` and `charts/`.

In a wheel they are package data under `llmctl/_assets/`; in a source checkout they sit at the top
of the repository, where people look for them.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_assets" / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"llmctl's {name}/ directory is missing from this installation")
