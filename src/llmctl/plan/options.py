"""What `llmctl plan` plans: the model (a catalog name, a local GGUF file or a GGUF URL), the GPUs
and the llama-server settings, from the command's options over the Stack's GPU tier.

For a file or URL the GGUF header is authoritative; a catalog name needs no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmctl import catalog
from llmctl.errors import ConfigError
from llmctl.plan.vram import ModelShape, Plan, ServeSettings, plan

if TYPE_CHECKING:
    from llmctl.config import Stack


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
    info = None if looks_like_location(spec) else catalog_entry(spec)
    if info is not None:
        return ModelShape.from_catalog(info)
    if not looks_like_location(spec):
        known = ", ".join(sorted(catalog.MODELS))
        raise ConfigError(
            f"--model {spec!r} is not a catalog model, a .gguf path or an http(s) URL",
            hint=f"catalog models: {known}",
        )
    from llmctl.plan.gguf import read_gguf_header

    return ModelShape.from_header(read_gguf_header(spec), name=name)


def plans_for(
    stack: Stack,
    model: str | None = None,
    gpu: str | None = None,
    ctx_per_request: int | None = None,
    parallel: int | None = None,
    ctx_size: int | None = None,
    kv_type: str = "f16",
    kv_unified: bool | None = None,
) -> list[tuple[Plan, list[str]]]:
    """One plan per GPU, with the clouds whose instance type carries it (none for --gpu)."""
    llama = stack.gpu.llamacpp
    if model is not None:
        shape = model_shape(model)
    else:
        info = catalog_entry(stack.gpu.model.name)
        shape = (
            ModelShape.from_catalog(info)
            if info is not None
            else model_shape(stack.gpu.model.uri, name=stack.gpu.model.name)
        )

    gpus: dict[str, list[str]] = {}
    if gpu is not None:
        if gpu not in catalog.GPUS:
            raise ConfigError(
                f"--gpu {gpu!r} is not a GPU llmctl knows",
                hint=f"choose one of: {', '.join(catalog.GPUS)}",
            )
        gpus[gpu] = []
    else:
        for cloud in catalog.CLOUDS:
            gpus.setdefault(stack.gpu.gpu_of(cloud).name, []).append(cloud.value)

    if kv_type != "f16" and not llama.flash_attn:
        raise ConfigError(
            f"--kv-type {kv_type} needs flash attention: llama.cpp refuses a quantized V cache "
            "without it",
            hint="set gpu.llamacpp.flash_attn: true (--set gpu.llamacpp.flash_attn=true)",
        )
    # The config's ctx_size holds only while neither the slots nor their size is overridden.
    if ctx_size is None and ctx_per_request is None and parallel is None:
        ctx_size = llama.ctx_size
    per_request = ctx_per_request or llama.ctx_per_request
    slots = parallel or llama.parallel
    # As config.LlamaCpp: unset, the cache is unified only when ctx_size is too short to split.
    unified = kv_unified if kv_unified is not None else llama.kv_unified
    if unified is None:
        unified = ctx_size is not None and ctx_size // slots < per_request
    try:
        settings = ServeSettings(
            ctx_per_request=per_request,
            parallel=slots,
            kv_type=kv_type,
            flash_attn=llama.flash_attn,
            ngl=llama.ngl,
            kv_unified=unified,
            ctx_size=ctx_size,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return [(plan(shape, catalog.GPUS[name], settings), clouds) for name, clouds in gpus.items()]
