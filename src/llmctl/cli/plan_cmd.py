"""`llmctl plan`: does a model, context and parallelism fit the GPU, before deploying."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmctl.cli import options

if TYPE_CHECKING:
    from llmctl.config import Stack
    from llmctl.plan.vram import FitReport, Plan


class PlanFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class KvType(StrEnum):
    F16 = "f16"
    Q8_0 = "q8_0"


def plan(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Catalog name, local .gguf path or http(s) URL (default: gpu.model). Files and URLs "
        "are sized from their GGUF header; only the header is fetched.",
    ),
    gpu: str | None = typer.Option(
        None,
        "--gpu",
        help="t4, l4, a10g, a100-40gb or h100 (default: the GPUs of gpu.instanceTypes).",
    ),
    ctx_per_request: int | None = typer.Option(
        None, "--ctx-per-request", min=256, help="Tokens per request (default: gpu.llamacpp)."
    ),
    parallel: int | None = typer.Option(
        None, "--parallel", "-np", min=1, max=256, help="Parallel slots (default: gpu.llamacpp)."
    ),
    ctx_size: int | None = typer.Option(
        None,
        "--ctx-size",
        min=256,
        help="llama-server's total -c, split between the slots (default: ctx-per-request x "
        "parallel).",
    ),
    kv_type: Annotated[KvType, typer.Option("--kv-type", help="KV cache type.")] = KvType.F16,
    kv_unified: bool | None = typer.Option(
        None,
        "--kv-unified/--no-kv-unified",
        help="One KV pool shared by the slots (default: only when --ctx-size is too short to "
        "split, as llmctl render does).",
    ),
    output: Annotated[
        PlanFormat, typer.Option("--output", "-o", help="table or json.")
    ] = PlanFormat.TABLE,
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Check whether a model, context and parallelism fit the GPU, and the most that fits.

    Exits 1 when it does not fit (any GPU's verdict is refuse), after printing the full plan, so
    a CI step can gate on it; 2 for bad input.
    """
    from llmctl.plan.vram import FitLevel, fit_report

    def report(p: Plan) -> FitReport:
        return fit_report(p, ctx_name="--ctx-per-request", par_name="--parallel")

    stack = options.load(config, sets).stack
    remote = model is not None and model.startswith(("http://", "https://"))
    from llmctl.cli.console import err_console, status_spinner

    # Reading a header over HTTP waits on a server that may be slow or stalled (30 s timeout).
    with status_spinner(err_console(), f"reading the GGUF header of {model}", show=remote):
        plans = _plans(stack, model, gpu, ctx_per_request, parallel, ctx_size, kv_type, kv_unified)
    for warning in plans[0][0].model.warnings:
        err_console().print(f"[yellow]warning:[/] {warning}", highlight=False)
    if output is PlanFormat.JSON:
        typer.echo(json.dumps(_as_json(plans, report), indent=2))
    else:
        _print_table(plans, report)
    if any(report(p).level is FitLevel.REFUSE for p, _ in plans):
        raise typer.Exit(1)


def _plans(
    stack: Stack,
    model: str | None,
    gpu: str | None,
    ctx_per_request: int | None,
    parallel: int | None,
    ctx_size: int | None,
    kv_type: KvType,
    kv_unified: bool | None,
) -> list[tuple[Plan, list[str]]]:
    from llmctl.plan.options import plans_for

    return plans_for(
        stack,
        model=model,
        gpu=gpu,
        ctx_per_request=ctx_per_request,
        parallel=parallel,
        ctx_size=ctx_size,
        kv_type=kv_type.value,
        kv_unified=kv_unified,
    )


def _as_json(
    plans: list[tuple[Plan, list[str]]], fit_report: Callable[[Plan], FitReport]
) -> dict[str, Any]:
    first = plans[0][0]
    m, s = first.model, first.settings
    return {
        "model": {
            "name": m.name,
            "source": m.source,
            "architecture": m.architecture,
            "quantization": m.quantization,
            "layers": m.n_layers,
            "embedding": m.n_embd,
            "heads": m.n_heads,
            "kvHeads": m.n_kv_heads,
            "headDim": m.head_dim_k,
            "feedForward": m.n_ff,
            "vocab": m.n_vocab,
            "ctxTrain": m.ctx_train,
            "weightBytes": m.weight_bytes,
            "tiedEmbedding": m.tied_embedding,
        },
        "warnings": list(m.warnings),
        "settings": {
            "ctxSize": s.kv_cells,
            "parallel": s.parallel,
            "ctxPerSlot": s.ctx_per_slot,
            "kvType": s.kv_type,
            "flashAttn": s.flash_attn,
            "ngl": s.ngl,
            "kvUnified": s.kv_unified,
        },
        "plans": [
            {
                "gpu": p.gpu.name,
                "clouds": clouds,
                "usableBytes": p.usable,
                "needBytes": {
                    "weights": p.need.weights,
                    "kvCache": p.need.kv_cache,
                    "compute": p.need.compute,
                    "cudaOverhead": p.need.cuda_overhead,
                    "total": p.need.total,
                },
                "fits": p.fits,
                "headroomBytes": p.headroom,
                "maxParallel": p.max_parallel,
                "maxCtxPerRequest": p.max_ctx_per_request,
                "level": (r := fit_report(p)).level.value,
                "message": r.message,
            }
            for p, clouds in plans
        ],
    }


def _print_table(
    plans: list[tuple[Plan, list[str]]], fit_report: Callable[[Plan], FitReport]
) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmctl.plan.vram import FitLevel, gib

    console = Console()
    first = plans[0][0]
    m, s = first.model, first.settings
    console.print(
        f"[bold]{m.name}[/] ({m.quantization}, {m.architecture}): {m.n_layers} layers, "
        f"{m.n_heads} heads ({m.n_kv_heads} KV) of {m.head_dim_k}, embedding {m.n_embd}, "
        f"trained on {m.ctx_train} tokens, {gib(m.weight_bytes)} of weights  [dim]({m.source})[/]"
    )
    console.print(
        f"llama-server -c {s.kv_cells} -np {s.parallel}{' --kv-unified' if s.kv_unified else ''}"
        f": [bold]{s.ctx_per_slot} tokens per request[/]"
        f"{f' (shared by {s.parallel} slots)' if s.kv_unified else ''}, KV cache {s.kv_type}, "
        f"flash attention {'on' if s.flash_attn else 'off'}, -ngl {s.ngl}"
    )
    if s.ctx_per_slot < s.ctx_per_request:
        console.print(
            f"[yellow]Each slot holds {s.ctx_per_slot} tokens, less than the "
            f"{s.ctx_per_request} asked for per request: raise --ctx-size to "
            f"{s.ctx_per_request * s.parallel} or lower --parallel.[/]"
        )
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    for p, clouds in plans:
        where = f" ({', '.join(clouds)})" if clouds else ""
        table.add_column(p.gpu.name + where, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("weights on GPU", [gib(p.need.weights) for p, _ in plans]),
        ("KV cache", [gib(p.need.kv_cache) for p, _ in plans]),
        ("compute buffer", [gib(p.need.compute) for p, _ in plans]),
        ("CUDA overhead", [gib(p.need.cuda_overhead) for p, _ in plans]),
        ("total need", [gib(p.need.total) for p, _ in plans]),
        ("usable memory", [gib(p.usable) for p, _ in plans]),
        ("headroom", [f"{gib(p.headroom)} ({p.headroom_fraction:.0%})" for p, _ in plans]),
        ("fits", ["yes" if p.fits else "NO" for p, _ in plans]),
        (f"max parallel at {s.ctx_per_slot} tokens", [str(p.max_parallel) for p, _ in plans]),
        (
            f"max tokens per request at -np {s.parallel}",
            [str(p.max_ctx_per_request) for p, _ in plans],
        ),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    console.print(table)
    colour = {FitLevel.OK: "green", FitLevel.WARN: "yellow", FitLevel.REFUSE: "red"}
    for p, _ in plans:
        report = fit_report(p)
        level = f"[{colour.get(report.level, 'white')}]{report.level.value}[/]"
        console.print(f"{level}: {report.message}")
        if p.max_ctx_per_request > m.ctx_train > 0:
            console.print(
                f"[dim]note: {m.name} was trained on {m.ctx_train} tokens; longer requests need "
                "RoPE scaling.[/]"
            )
