"""`llmctl cost estimate`: CPU-only vs GPU 24/7 vs scale-to-zero, monthly, per cloud and total."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from llmctl.cli import options

if TYPE_CHECKING:
    from llmctl.cost.model import Estimate, EstimateRequest, Workload

app = typer.Typer(help="Estimate what serving costs on each cloud.", no_args_is_help=True)


class CloudChoice(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    ALL = "all"


class ModeChoice(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    SCALE_TO_ZERO = "scale-to-zero"
    ALL = "all"


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"
    CSV = "csv"


class AksTierChoice(StrEnum):
    FREE = "free"
    STANDARD = "standard"


# One option per field of cost.model.Workload, under the field's own name, in --help's order.
WORKLOAD_OPTIONS: dict[str, Any] = {
    "gpu_requests_per_day": typer.Option(
        100.0, "--gpu-requests-per-day", help="GPU requests per day, per cluster."
    ),
    "avg_output_tokens": typer.Option(
        300.0, "--avg-output-tokens", help="Average output tokens per request."
    ),
    "gpu_tokens_per_second": typer.Option(
        None,
        "--tokens-per-second",
        help="Output tokens/s of one GPU replica (default: the catalog's throughput table).",
    ),
    "cpu_tokens_per_second": typer.Option(
        None,
        "--cpu-tokens-per-second",
        help="Output tokens/s of one CPU replica (default: the catalog's throughput table).",
    ),
    "idle_timeout_s": typer.Option(
        300.0, "--idle-timeout", help="KEDA cooldown in seconds before the GPU pod goes away."
    ),
    "scale_down_delay_s": typer.Option(
        600.0,
        "--scale-down-delay",
        help="Seconds the cluster autoscaler keeps the empty GPU node afterwards "
        "(scale-down-unneeded-time; 10 min by default on EKS, GKE and AKS).",
    ),
    "cold_start_s": typer.Option(
        240.0, "--cold-start", help="Seconds from first request to a serving GPU node."
    ),
    "active_hours_per_day": typer.Option(
        24.0, "--active-hours", help="Hours of each day in which requests arrive."
    ),
}
# Workload's field types (cost.model itself is imported only when the command runs).
WORKLOAD_TYPES: dict[str, Any] = dict.fromkeys(WORKLOAD_OPTIONS, float) | {
    "gpu_tokens_per_second": float | None,
    "cpu_tokens_per_second": float | None,
}


def _workload(**given: Any) -> Workload:
    from llmctl.cost.model import Workload

    return Workload(**given)


@app.command("estimate")
@options.option_group("workload", _workload, WORKLOAD_OPTIONS, WORKLOAD_TYPES)
def estimate(
    *,
    cloud: CloudChoice = typer.Option(CloudChoice.ALL, "--cloud", help="aws, azure, gcp or all."),
    mode: ModeChoice = typer.Option(
        ModeChoice.ALL, "--mode", help="cpu, gpu, scale-to-zero or all."
    ),
    spot: bool = typer.Option(
        True, "--spot/--on-demand", help="Spot/preemptible prices (default) or on-demand."
    ),
    regions: list[str] | None = typer.Option(
        None,
        "--region",
        help="A region to price (repeatable; its cloud is found from the name). "
        "Default: each cloud's region in the Stack config.",
    ),
    instance_types: list[str] | None = typer.Option(
        None,
        "--instance-type",
        help="An instance type to price instead of the config's (repeatable; GPU types replace "
        "the GPU tier's, others the CPU tier's, in the cloud they belong to).",
    ),
    hours_per_month: float = typer.Option(730.0, "--hours-per-month", help="Hours in a month."),
    workload: Workload,
    aks_tier: AksTierChoice = typer.Option(
        AksTierChoice.FREE, "--aks-tier", help="AKS cluster-management tier: free or standard."
    ),
    gke_free_tier: bool | None = typer.Option(
        None,
        "--gke-free-tier/--no-gke-free-tier",
        help="Whether GKE's free tier covers the cluster fee (default: only for a zonal "
        "clouds.gcp.region such as us-central1-a; never for a regional cluster).",
    ),
    control_plane: bool = typer.Option(
        True, "--control-plane/--no-control-plane", help="Include managed control-plane fees."
    ),
    live: bool = typer.Option(
        False, "--live", help="Refresh prices from the providers' public price APIs first."
    ),
    output: OutputFormat = typer.Option(
        OutputFormat.TABLE, "--output", "-o", help="table, json, yaml or csv."
    ),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Monthly cost of CPU-only, GPU 24/7 and scale-to-zero serving, per cloud and in total."""
    from llmctl.cost import model, report
    from llmctl.cost.fit import cpu_tier_pods
    from llmctl.cost.prices import Capacity, load_catalog

    loaded = options.load(config, sets)
    stack = loaded.stack
    prices = load_catalog()
    workload.validate()
    plans = report.plans_for(
        stack,
        prices,
        None if cloud is CloudChoice.ALL else cloud.value,
        regions or [],
        instance_types or [],
        {key: str(source) for key, (_, source) in loaded.changed.items()},
    )
    request = model.EstimateRequest(
        clouds=plans,
        modes=tuple(model.Mode) if mode is ModeChoice.ALL else (model.Mode(mode.value),),
        capacity=Capacity.SPOT if spot else Capacity.ON_DEMAND,
        hours_per_month=hours_per_month,
        workload=workload,
        cpu_model=stack.cpu.model.name,
        gpu_model=stack.gpu.model.name,
        aks_tier=model.AksTier(aks_tier.value),
        gke_free_tier=gke_free_tier,
        include_control_plane=control_plane,
        cpu_pods=tuple(cpu_tier_pods(stack)),
        gpu_local_disk=stack.gpu.model_volume == "local",
    )
    warnings: list[str] = []
    if live:
        prices, warnings = report.refresh_live(prices, plans)
    result = model.estimate(prices, request)
    _print(result, request, warnings, output)


def _print(
    result: Estimate, request: EstimateRequest, live_warnings: list[str], output: OutputFormat
) -> None:
    from rich.console import Console

    from llmctl.cost import report

    err = Console(stderr=True)
    for warning in [*live_warnings, *result.warnings]:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if output is OutputFormat.TABLE:
        report.print_table(result, request, Console())
        return
    text = {
        OutputFormat.JSON: report.to_json,
        OutputFormat.YAML: report.to_yaml,
        OutputFormat.CSV: report.to_csv,
    }[output](result, [*live_warnings, *result.warnings])
    typer.echo(text, nl=False)


class KeysFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


@app.command("keys")
def keys(
    prometheus: str = typer.Option(
        ...,
        "--prometheus",
        help="Prometheus' URL (the one that scrapes the routers), e.g. http://127.0.0.1:9090.",
    ),
    since: str = typer.Option("24h", "--since", help="The window, back from now: 24h, 90m, 7d."),
    matchers: str = typer.Option(
        "",
        "--matchers",
        help="Label matchers that pick this deployment's routers, e.g. 'namespace=\"llm-server\"'.",
    ),
    spot: bool = typer.Option(
        True, "--spot/--on-demand", help="Price GPU hours at spot (default) or on-demand."
    ),
    output: KeysFormat = typer.Option(KeysFormat.TABLE, "--output", "-o", help="table or json."),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """What each API key's GPU use cost over a window, from the routers' metrics in Prometheus."""
    from llmctl.cost import keys as key_cost
    from llmctl.cost.prices import Capacity, load_catalog
    from llmctl.cost.prometheus import read_usage

    window = key_cost.parse_window(since)
    stack = options.load(config, sets).stack
    tokens, hours = read_usage(prometheus, window, matchers.strip())
    capacity = Capacity.SPOT if spot else Capacity.ON_DEMAND
    priced, warnings = key_cost.gpu_prices(stack, load_catalog(), hours, capacity)
    report = key_cost.key_costs(window, key_cost.tokens_by_key(tokens), priced, tuple(warnings))
    _print_keys(report, output)


def _print_keys(report: Any, output: KeysFormat) -> None:
    import json

    from rich.console import Console

    from llmctl.cost import keys as key_cost

    if output is KeysFormat.JSON:
        typer.echo(json.dumps(key_cost.to_data(report), indent=2))
        return
    from rich.table import Table

    err = Console(stderr=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    hours = report.window_seconds / 3600
    table = Table(title=f"GPU cost per API key, last {hours:g} h")
    for name in ("key", "GPU tokens", "CPU tokens", "GPU share", "GPU cost"):
        table.add_column(name, justify="left" if name == "key" else "right")
    for row in report.rows:
        table.add_row(
            row.key,
            f"{row.gpu_tokens:,.0f}",
            f"{row.cpu_tokens:,.0f}",
            f"{row.gpu_share:.1%}",
            f"${row.gpu_usd:,.4f}",
        )
    console = Console()
    console.print(table)
    for price in report.gpu:
        console.print(
            f"GPU {price.cloud}: {price.hours:.3f} h of {price.instance_type} in {price.region} "
            f"at ${price.usd_per_hour:.4f}/h = ${price.usd:,.4f}",
            highlight=False,
        )
    if report.unattributed_usd:
        console.print(
            f"${report.unattributed_usd:,.4f} of GPU time served no key's tokens in the window",
            highlight=False,
        )
