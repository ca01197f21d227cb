"""Find the shape of the model to plan for: a catalog name, a local GGUF file or a GGUF URL.

For a file or URL the GGUF header is authoritative; a catalog name needs no download.
"""

from __future__ import annotations

from pathlib import Path

from llmctl import catalog
from llmctl.vram import ModelShape


def catalog_entry(name: str) -> catalog.ModelInfo | None:
    if name in catalog.MODELS:
        return catalog.MODELS[name]
    return next((m for m in catalog.MODELS.values() if name in m.aliases), None)


def looks_like_location(spec: str) -> bool:
    return (
        "://" in spec
        or "/" in spec
        or spec.endswith(".gguf")
        or spec.startswith("~")
        or Path(spec).exists()
    )


def model_shape(spec: str, name: str | None = None) -> ModelShape:
    """A catalog name or alias, else a path or URL whose GGUF header is read."""
    from llmctl.errors import ConfigError

    info = None if looks_like_location(spec) else catalog_entry(spec)
    if info is not None:
        return ModelShape.from_catalog(info)
    if not looks_like_location(spec):
        known = ", ".join(sorted(catalog.MODELS))
        raise ConfigError(
            f"--model {spec!r} is not a catalog model, a .gguf path or an http(s) URL",
            hint=f"catalog models: {known}",
        )
    from llmctl.gguf_header import read_gguf_header

    return ModelShape.from_header(read_gguf_header(spec), name=name)
