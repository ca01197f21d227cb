"""What `llmctl cost estimate` needs around the pure model: plans from the Stack, and output.

Builds one `CloudPlan` per cloud from the Stack config and the flags (checking every name against
the catalogs, so a typo exits 2 with the allowed values), and turns an `Estimate` into a Rich
table, JSON, YAML or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.cost import egress
from llmctl.cost.egress import RemoteRow
from llmctl.cost.model import (
    MODE_TITLES,
    CloudPlan,
    Estimate,
    EstimateRequest,
    ScenarioCost,
    gcp_region_of,
)
from llmctl.cost.prices import PriceCatalog
from llmctl.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from llmctl.config import Stack


def _cloud_of_instance(name: str) -> CloudName:
    for cloud, types in catalog.INSTANCE_TYPES.items():
        if name in types:
            return cloud
    known = "; ".join(
        f"{c.value}: {', '.join(sorted(types))}" for c, types in catalog.INSTANCE_TYPES.items()
    )
    raise ConfigError(f"unknown instance type {name!r}", hint=f"allowed instance types: {known}")


def plans_for(
    stack: Stack,
    prices: PriceCatalog,
    only: str | None,
    regions: list[str],
    instance_types: list[str],
    origins: Mapping[str, str] | None = None,
) -> tuple[CloudPlan, ...]:
    """One plan per cloud: the config's region and GPU type, overridden by the flags.

    `origins` says where a config value came from (`LoadedStack.changed`: "gpu.instanceTypes.aws"
    -> "environment variable GPU_INSTANCE_TYPE"), so a type or region that has no price is
    refused up front, naming the place to change it.
    """
    origins = dict(origins or {})
    clouds = [CloudName(only)] if only else list(catalog.CLOUDS)
    location = {c: stack.clouds.of(c).region for c in catalog.CLOUDS}
    gpu = {c: stack.gpu.instance_types.of(c) for c in catalog.CLOUDS}
    cpu = dict(catalog.DEFAULT_CPU_INSTANCE_TYPES)
    for name in regions:
        cloud = prices.cloud_of_region(gcp_region_of(name))
        if cloud not in clouds:
            raise ConfigError(
                f"--region {name} is a {cloud.value} region but --cloud is {only}",
                hint=f"allowed {only} regions: "
                + ", ".join(prices.regions(CloudName(only or cloud))),
            )
        location[cloud] = name
        origins[f"clouds.{cloud.value}.region"] = f"--region {name}"
    for name in instance_types:
        cloud = _cloud_of_instance(name)
        if cloud not in clouds:
            raise ConfigError(
                f"--instance-type {name} is a {cloud.value} type but --cloud is {only}",
                hint="allowed instance types: "
                + ", ".join(sorted(catalog.INSTANCE_TYPES[CloudName(only or cloud)])),
            )
        is_gpu = bool(catalog.INSTANCE_TYPES[cloud][name].gpu)
        (gpu if is_gpu else cpu)[cloud] = name
        if is_gpu:
            origins[f"gpu.instanceTypes.{cloud.value}"] = f"--instance-type {name}"
    plans = []
    for cloud in clouds:
        where = location[cloud]
        region = gcp_region_of(where) if cloud is CloudName.GCP else where
        plan = CloudPlan(cloud, region, cpu[cloud], gpu[cloud], where if where != region else None)
        # Fail now, naming what is priced and where the unpriced name came from, rather than
        # half-way through the estimate.
        region_from = origins.get(f"clouds.{cloud.value}.region", "the built-in default")
        try:
            prices.region(cloud, plan.region)
        except ConfigError as exc:
            raise ConfigError(f"{exc.message} (set by {region_from})", hint=exc.hint) from None
        _check_priced(prices, plan, plan.cpu_instance, "the built-in CPU type", region_from)
        gpu_from = origins.get(f"gpu.instanceTypes.{cloud.value}", "the built-in default")
        _check_priced(prices, plan, plan.gpu_instance, gpu_from, region_from)
        plans.append(plan)
    return tuple(plans)


def _check_priced(
    prices: PriceCatalog, plan: CloudPlan, name: str, name_from: str, region_from: str
) -> None:
    if name in prices.region(plan.cloud, plan.region).instances:
        return
    priced = ", ".join(sorted(prices.region(plan.cloud, plan.region).instances))
    elsewhere = [
        r for r, p in sorted(prices.cloud(plan.cloud).regions.items()) if name in p.instances
    ]
    where = f" (priced in {', '.join(elsewhere)})" if elsewhere else ""
    raise ConfigError(
        f"llmctl has no {plan.cloud.value} price for instance type {name!r} in {plan.region}"
        f"{where}; the type comes from {name_from}, the region from {region_from}",
        hint=f"change it there, or estimate another with --instance-type TYPE (priced in "
        f"{plan.region}: {priced}), or add it to prices.yaml with its source",
    )


def refresh_live(
    prices: PriceCatalog, plans: tuple[CloudPlan, ...]
) -> tuple[PriceCatalog, list[str]]:
    from llmctl.cost.live import PricedItems, PriceEndpoints, refresh

    wanted = []
    for plan in plans:
        accelerators: tuple[str, ...] = ()
        gpu = catalog.INSTANCE_TYPES[plan.cloud][plan.gpu_instance].gpu
        if plan.cloud is CloudName.GCP and gpu is not None:
            accelerators = (catalog.GPUS[gpu].label,)
        wanted.append(
            PricedItems(
                plan.cloud, plan.region, (plan.cpu_instance, plan.gpu_instance), accelerators
            )
        )
    return refresh(prices, wanted, PriceEndpoints.from_env(os.environ))


# ---------------------------------------------------------------------------------------------
# Output


def _camel(name: str) -> str:
    """usd_per_million_tokens -> usdPerMillionTokens: docs/cli.md's one key casing."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _row_dict(row: ScenarioCost) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in asdict(row).items():
        if isinstance(value, float):
            value = round(value, 6)
        data[_camel(key)] = value
    data["mode"] = row.mode.value
    return data


def to_data(result: Estimate, warnings: list[str]) -> dict[str, Any]:
    """One document: per-cloud `rows`, and their sums per scenario apart, under `totals`."""
    return {
        "currency": "USD",
        "period": "month",
        "rows": [_row_dict(r) for r in result.rows],
        "totals": [_row_dict(r) for r in result.totals],
        "assumptions": result.assumptions,
        "warnings": warnings,
        "prices": [{_camel(k): v for k, v in asdict(p).items()} for p in result.prices],
        "remote": [_remote_dict(r) for r in result.remote],
        "modelStore": [{_camel(k): v for k, v in asdict(r).items()} for r in result.model_store],
    }


def _remote_dict(row: RemoteRow) -> dict[str, Any]:
    serving = row.serving
    return {
        "cloud": serving.cloud,
        "egressUsdPerUnit": serving.usd_per_unit,
        "egressUnit": serving.unit,
        "egressUsdPerMillionTokensStreamed": round(serving.streamed_usd_per_million_tokens, 6),
        "egressUsdPerMillionTokensPlain": round(serving.plain_usd_per_million_tokens, 6),
        "egressUsdPerMillionPromptTokens": round(serving.prompt_usd_per_million_tokens, 6),
        "wakeLocalGpuUsd": round(row.wake_usd, 6),
        "streamedTokensPerWake": None
        if row.tokens_per_wake is None
        else round(row.tokens_per_wake),
        "cheapestOtherCloud": row.cheapest_other,
        "source": serving.source,
        "date": serving.date,
    }


def print_remote(result: Estimate, request: EstimateRequest, console: Console) -> None:
    """Serving a GPU request from another cloud (issue 16), beside waking the local GPU."""
    from rich.table import Table

    table = Table(
        title="Served by another cloud (federation): egress vs waking the local GPU",
        title_justify="left",
    )
    for header in (
        "Cloud",
        "Egress rate",
        "per 1M tokens streamed",
        "not streamed",
        "Wake its GPU once",
        "= tokens served by",
    ):
        table.add_column(header, justify="left" if header == "Cloud" else "right")
    for row in result.remote:
        serving = row.serving
        table.add_row(
            serving.cloud,
            f"${serving.usd_per_unit:g}/{serving.unit}",
            _money(serving.streamed_usd_per_million_tokens, 4),
            _money(serving.plain_usd_per_million_tokens, 5),
            _money(row.wake_usd, 4),
            "n/a"
            if row.tokens_per_wake is None
            else f"{row.tokens_per_wake / 1e6:,.2f}M ({row.cheapest_other})",
        )
    print_whole(table, console)
    w = request.workload
    console.print(
        f"  Egress is the serving cloud's published internet rate (first paid tier), for about "
        f"{egress.STREAMED_BYTES_PER_TOKEN} bytes per streamed token (one Server-Sent Event) or "
        f"{egress.PLAIN_BYTES_PER_TOKEN} per token in one JSON answer; the prompt (about "
        f"{egress.PROMPT_BYTES_PER_TOKEN} bytes per token) leaves the forwarding cloud. A wake "
        f"bills the GPU node for the cold start ({w.cold_start_s:g} s) and the idle tail after "
        f"the last request ({w.idle_tail_s:g} s: cooldown + scale-down delay).",
        highlight=False,
        soft_wrap=True,
    )
    for row in result.remote:
        console.print(
            f"  - {row.serving.cloud} egress: {row.serving.source} ({row.serving.date})",
            highlight=False,
            soft_wrap=True,
        )


def to_json(result: Estimate, warnings: list[str]) -> str:
    return json.dumps(to_data(result, warnings), indent=2) + "\n"


def to_yaml(result: Estimate, warnings: list[str]) -> str:
    return yaml.safe_dump(to_data(result, warnings), sort_keys=False, width=100)


def to_csv(result: Estimate, warnings: list[str]) -> str:
    # Per-cloud rows only: a spreadsheet sums them itself, and a sum row would count twice.
    rows = [_row_dict(r) for r in result.rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def _money(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"${value:,.{digits}f}"


def print_whole(table: Table, console: Console) -> None:
    """Print `table` without cutting a figure. Rich fits a table to the console, 80 columns when
    the output is a file or a pipe, and squeezes what does not fit into "$118.…": there the table
    gets its natural width instead. A terminal keeps its own width, with a note when the table
    needs more."""
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    if needed <= console.width:
        console.print(table)
    elif not console.is_terminal:
        width = console.width
        console.width = needed
        try:
            console.print(table)
        finally:
            console.width = width
    else:
        console.print(table)
        console.print(
            f"[dim](the table needs {needed} columns and this terminal has {console.width}: some "
            "figures are cut; widen the window, or use -o csv or -o json)[/dim]",
            highlight=False,
        )


def print_table(result: Estimate, request: EstimateRequest, console: Console) -> None:
    from rich.table import Table

    table = Table(
        title=f"Monthly cost, {request.capacity.value}, {request.hours_per_month:g} h",
        title_justify="left",
    )
    for header, justify in (
        ("Cloud", "left"),
        ("Scenario", "left"),
        ("Region", "left"),
        ("Nodes", "left"),
        ("GPU node-h", "right"),
        ("Compute", "right"),
        ("Control plane", "right"),
        ("Disk", "right"),
        ("Total / month", "right"),
        ("per 1M tokens", "right"),
        ("per request", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    ordered: list[ScenarioCost] = []
    for mode in dict.fromkeys(r.mode for r in result.rows):
        ordered += [r for r in result.rows if r.mode is mode]
        ordered += [r for r in result.totals if r.mode is mode]
    previous = None
    for row in ordered:
        if previous is not None and row.mode is not previous:
            table.add_section()
        previous = row.mode
        style = "bold" if row.cloud == "total" else None
        table.add_row(
            row.cloud,
            MODE_TITLES[row.mode],
            row.region,
            row.nodes,
            f"{row.gpu_node_hours:,.0f}",
            _money(row.compute_usd),
            _money(row.control_plane_usd),
            _money(row.disk_usd),
            _money(row.total_usd),
            _money(row.usd_per_million_tokens),
            _money(row.usd_per_request, 4),
            style=style,
        )
    print_whole(table, console)
    console.print("[bold]Assumptions[/bold]")
    for line in result.assumptions:
        console.print(f"  - {line}", highlight=False, soft_wrap=True)
    console.print("[bold]Prices used[/bold]")
    for p in result.prices:
        console.print(
            f"  - {p.cloud} {p.region} {p.item} {p.capacity}: ${p.price:g}"
            f"{p.unit.removeprefix('USD')} ({p.source}, {p.date})",
            highlight=False,
            soft_wrap=True,
        )
    if result.remote:  # federation (issue 16)
        print_remote(result, request, console)
    if result.model_store:  # the model cache (issue 30)
        print_model_store(result, request, console)


def print_model_store(result: Estimate, request: EstimateRequest, console: Console) -> None:
    """The GPU model kept in each cloud's object store (llmctl model push), beside the Hub."""
    from rich.table import Table

    table = Table(
        title=f"Model cache: {request.gpu_model} in each cloud's object store (llmctl model push)",
        title_justify="left",
    )
    for header in ("Cloud", "Store", "Size", "Storage /month", "Per wake", "Hub fetch at 50 MB/s"):
        table.add_column(header, justify="left" if header in ("Cloud", "Store") else "right")
    for row in result.model_store:
        table.add_row(
            row.cloud,
            row.storage_class,
            f"{row.model_gb:.2f} GB",
            _money(row.storage_usd_per_month, 3),
            f"{_money(row.usd_per_wake, 5)} ({row.gets_per_wake} GETs)",
            f"{row.hub_fetch_s:.0f} s",
        )
    print_whole(table, console)
    console.print(
        "  The fetch stays in the cluster's region: no transfer is billed, only the ranged GETs. "
        "The Hub bills nothing either, but every wake downloads from outside the cloud "
        "(docs/deploy.md, 'Model cache').",
        highlight=False,
        soft_wrap=True,
    )
    for row in result.model_store:
        console.print(
            f"  - {row.cloud} storage: {row.source} ({row.date})", highlight=False, soft_wrap=True
        )
