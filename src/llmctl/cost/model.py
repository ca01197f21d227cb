"""The cost model: CPU-only vs GPU 24/7 vs scale-to-zero, monthly, from the price catalog.

Pure functions of a `PriceCatalog` and an `EstimateRequest`: no I/O, no network. The CLI builds
the request from the Stack config and flags; `live_prices` may hand in a refreshed catalog.

Scale-to-zero model. GPU requests arrive at random (a Poisson process) during the active hours of
each day, at rate λ per hour. A GPU node is up while it serves, while it waits out the KEDA
cooldown T after the last request, and while it starts (node start plus model load, c). Between
requests, one renewal cycle is: down until the next request (mean 1/λ), cold start c, then up
until a gap longer than T occurs (mean (e^{λT} - 1)/λ). The share of idle time the node is up is

    u = 1 - 1 / (e^{λT} + λc)

The node, not the pod, is what is billed, so T is the whole idle tail of the node: KEDA's cooldown
(the GPU pod goes away) plus the cluster autoscaler's scale-down delay (the empty node goes away;
`scale-down-unneeded-time`, 10 minutes by default on EKS's cluster-autoscaler, GKE and AKS).
A request inside that tail finds the node still up, so it counts as "up" like the cooldown does.

which grows with λ, T and c and stays below 1. Busy hours (tokens / throughput) are added on
top, and the sum is capped at the month's active hours, so scale-to-zero never costs more than
the same GPU node running 24/7 and always costs more when traffic rises.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.cost import egress, fit, model_store
from llmctl.cost.prices import Capacity, HourlyPrice, PriceCatalog, Sourced
from llmctl.errors import ConfigError

HOURS_PER_MONTH = 730.0  # 8760 / 12, the month every provider's "per month" figure uses
DEFAULT_CPU_DISK_GB = 30.0
DEFAULT_GPU_DISK_GB = 100.0  # CUDA image plus a 4 GB model file, with room to pull a new one


class Mode(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    SCALE_TO_ZERO = "scale-to-zero"


MODE_TITLES: dict[Mode, str] = {
    Mode.CPU: "CPU-only 24/7",
    Mode.GPU: "GPU 24/7",
    Mode.SCALE_TO_ZERO: "scale-to-zero GPU",
}


class AksTier(StrEnum):
    FREE = "free"
    STANDARD = "standard"


@dataclass(frozen=True)
class Workload:
    """The user's GPU traffic, per cloud."""

    gpu_requests_per_day: float = 100.0
    avg_output_tokens: float = 300.0
    gpu_tokens_per_second: float | None = None  # per GPU replica; None: the throughput table
    cpu_tokens_per_second: float | None = None  # per CPU replica; None: the throughput table
    idle_timeout_s: float = 300.0  # KEDA cooldownPeriod
    # The cluster autoscaler's scale-down-unneeded-time: an empty GPU node stays this long.
    scale_down_delay_s: float = 600.0
    cold_start_s: float = 240.0  # GPU node start plus image pull and model load
    active_hours_per_day: float = 24.0  # the hours of each day in which requests arrive

    @property
    def idle_tail_s(self) -> float:
        """How long a GPU node stays up after the last request: cooldown + scale-down delay."""
        return self.idle_timeout_s + self.scale_down_delay_s

    def validate(self) -> None:
        checks: list[tuple[str, float | None, bool]] = [
            ("--gpu-requests-per-day", self.gpu_requests_per_day, self.gpu_requests_per_day >= 0),
            ("--avg-output-tokens", self.avg_output_tokens, self.avg_output_tokens >= 0),
            ("--idle-timeout", self.idle_timeout_s, self.idle_timeout_s >= 0),
            ("--scale-down-delay", self.scale_down_delay_s, self.scale_down_delay_s >= 0),
            ("--cold-start", self.cold_start_s, self.cold_start_s >= 0),
        ]
        for flag, value in (
            ("--tokens-per-second", self.gpu_tokens_per_second),
            ("--cpu-tokens-per-second", self.cpu_tokens_per_second),
        ):
            checks.append((flag, value, value is None or value > 0))
        for flag, value, ok in checks:
            if not ok or (value is not None and not math.isfinite(value)):
                bound = "> 0" if "second" in flag else ">= 0"
                raise ConfigError(
                    f"{flag} must be a finite number {bound}, got {value}",
                    hint=f"allowed values: numbers {bound}",
                )
        if not 0 < self.active_hours_per_day <= 24:
            raise ConfigError(
                f"--active-hours must be above 0 and at most 24, got {self.active_hours_per_day}",
                hint="allowed values: 0 < hours <= 24",
            )


@dataclass(frozen=True)
class CloudPlan:
    """What runs in one cloud: its region and the instance types of the two tiers.

    `location` is where the cluster is, when it is narrower than the priced region: a GKE zone
    (us-central1-a), which decides whether GKE's free tier can cover the cluster fee.
    """

    cloud: CloudName
    region: str
    cpu_instance: str
    gpu_instance: str
    location: str | None = None

    @property
    def cluster_location(self) -> str:
        return self.location or self.region

    @property
    def zonal(self) -> bool:
        return is_gcp_zone(self.cluster_location)


_GCP_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")


def is_gcp_zone(location: str) -> bool:
    """us-central1-a is a zone; us-central1 is a region (a regional GKE cluster)."""
    return bool(_GCP_ZONE.match(location))


def gcp_region_of(location: str) -> str:
    return location.rsplit("-", 1)[0] if is_gcp_zone(location) else location


@dataclass(frozen=True)
class EstimateRequest:
    clouds: tuple[CloudPlan, ...]
    modes: tuple[Mode, ...] = tuple(Mode)
    capacity: Capacity = Capacity.SPOT
    hours_per_month: float = HOURS_PER_MONTH
    workload: Workload = Workload()
    cpu_model: str = catalog.CPU_DEFAULT_MODEL
    gpu_model: str = catalog.GPU_DEFAULT_MODEL
    aks_tier: AksTier = AksTier.FREE
    # GKE's free tier covers the fee of one zonal or Autopilot cluster per billing account, never
    # a regional one. None: apply it exactly when the cluster's location is a zone.
    gke_free_tier: bool | None = None
    include_control_plane: bool = True
    cpu_disk_gb: float = DEFAULT_CPU_DISK_GB
    gpu_disk_gb: float = DEFAULT_GPU_DISK_GB
    # The GPU nodes carry the local disk `llmctl gpu enable` gives them while the GPU tier's
    # model volume is `local` (issue 30); where the cloud bills it apart (GKE Local SSD), it
    # is counted per GPU node-hour beside the node.
    gpu_local_disk: bool = field(default_factory=lambda: Stack().gpu.model_volume == "local")
    # The pods that run on CPU nodes in every scenario (the CPU tier and the routers): they
    # decide how many CPU nodes each cluster pays for.
    cpu_pods: tuple[fit.PodRequest, ...] = field(
        default_factory=lambda: tuple(fit.cpu_tier_pods(Stack()))
    )


@dataclass(frozen=True)
class ScenarioCost:
    """One line of the estimate: one scenario in one cloud, or the total over clouds."""

    cloud: str  # a cloud name, or "total"
    mode: Mode
    region: str
    nodes: str
    cpu_nodes: int
    gpu_node_hours: float
    compute_usd: float
    control_plane_usd: float
    disk_usd: float
    total_usd: float
    output_tokens: float
    requests: float
    usd_per_million_tokens: float | None
    usd_per_request: float | None


@dataclass(frozen=True)
class PriceUsed:
    cloud: str
    region: str
    item: str
    capacity: str
    price: float
    unit: str
    source: str
    date: str
    note: str | None = None


@dataclass(frozen=True)
class Estimate:
    rows: list[ScenarioCost]  # one per cloud and scenario; never a sum of other rows
    assumptions: list[str]
    totals: list[ScenarioCost] = field(default_factory=list)  # per scenario, over the clouds
    warnings: list[str] = field(default_factory=list)
    prices: list[PriceUsed] = field(default_factory=list)
    # Serving a GPU request from another cloud (issue 16): egress per 1M tokens beside the
    # price of waking the local GPU, per cloud.
    remote: list[egress.RemoteRow] = field(default_factory=list)
    # The GPU model in each cloud's object store (issue 30): storage a month, each wake's fetch.
    model_store: list[model_store.StoreRow] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The scale-to-zero node-hours.


def busy_hours(workload: Workload, hours: float, tokens_per_second: float) -> float:
    """GPU hours spent decoding the month's output tokens, one request at a time."""
    tokens = workload.gpu_requests_per_day * (hours / 24.0) * workload.avg_output_tokens
    return tokens / tokens_per_second / 3600.0


def down_share_of_idle_time(
    rate_per_hour: float, idle_timeout_h: float, cold_start_h: float
) -> float:
    """1 - u = 1/(e^{λT} + λc): the share of non-busy time a scale-to-zero node is down.

    No traffic (λ = 0) gives 1/(e^0 + 0) = 1: the node is always down, with no special case.
    """
    rate = max(rate_per_hour, 0.0)  # a negative rate is no traffic
    exponent = min(rate * idle_timeout_h, 700.0)  # e^700 is near float's limit
    return 1.0 / (math.exp(exponent) + rate * cold_start_h)


def gpu_node_hours(workload: Workload, hours: float, tokens_per_second: float) -> float:
    """Monthly node-hours of one scale-to-zero GPU node; never above `hours`."""
    active_hours = hours * workload.active_hours_per_day / 24.0
    busy = min(busy_hours(workload, hours, tokens_per_second), active_hours)
    rate = workload.gpu_requests_per_day / workload.active_hours_per_day
    down = down_share_of_idle_time(
        rate, workload.idle_tail_s / 3600.0, workload.cold_start_s / 3600.0
    )
    # Written as "active minus the idle time spent down" so that rounding cannot make more
    # traffic give fewer hours.
    return min(hours, active_hours - (active_hours - busy) * down)


# ---------------------------------------------------------------------------------------------
# Pricing one cloud.


@dataclass
class _CloudCosts:
    plan: CloudPlan
    cpu_nodes: int
    cpu_hourly: float
    gpu_hourly: float
    control_plane: float
    disk_per_gb_month: float
    gpu_tps: float
    # What one GPU node's local disk adds a month (0: none, or it comes with the VM).
    gpu_local_disk_month: float
    cpu_tps: float


def _gpu_hourly(
    prices: PriceCatalog, plan: CloudPlan, capacity: Capacity, used: list[PriceUsed]
) -> float:
    instance = catalog.INSTANCE_TYPES[plan.cloud][plan.gpu_instance]
    total = _record(prices, plan, plan.gpu_instance, capacity, used)
    if plan.cloud is CloudName.GCP and instance.gpu is not None:
        # GCP bills the GPU separately from the machine type it is attached to.
        label = catalog.GPUS[instance.gpu].label
        accel = prices.accelerator(plan.cloud, plan.region, label).of(capacity)
        used.append(_used(plan, f"{label} x{instance.gpu_count}", capacity, accel))
        total += accel.usd_per_hour * instance.gpu_count
    return total


def _record(
    prices: PriceCatalog, plan: CloudPlan, name: str, capacity: Capacity, used: list[PriceUsed]
) -> float:
    entry = prices.instance(plan.cloud, plan.region, name)
    price = entry.of(capacity)
    used.append(
        _used(plan, name, capacity if price is not entry.on_demand else Capacity.ON_DEMAND, price)
    )
    return price.usd_per_hour


def _used(plan: CloudPlan, item: str, capacity: Capacity, price: HourlyPrice) -> PriceUsed:
    return _sourced(plan, item, capacity.value, price.usd_per_hour, "USD/hour", price)


def _sourced(
    plan: CloudPlan, item: str, capacity: str, amount: float, unit: str, figure: Sourced
) -> PriceUsed:
    """One line of the assumptions: a price, and where and when it was read."""
    return PriceUsed(
        cloud=plan.cloud.value,
        region=plan.region,
        item=item,
        capacity=capacity,
        price=amount,
        unit=unit,
        source=figure.source,
        date=figure.date,
        note=figure.note,
    )


def _control_plane_hourly(
    prices: PriceCatalog, request: EstimateRequest, plan: CloudPlan, used: list[PriceUsed]
) -> float:
    tiers = prices.cloud(plan.cloud).control_plane
    tier = {
        CloudName.AWS: "standard",
        CloudName.AZURE: request.aks_tier.value,
        CloudName.GCP: "standard",
    }[plan.cloud]
    price = tiers[tier]
    used.append(
        _sourced(
            plan, f"control plane ({tier})", "-", price.usd_per_hour, "USD/cluster-hour", price
        )
    )
    if not request.include_control_plane:
        return 0.0
    if plan.cloud is CloudName.GCP and gke_free_tier_applies(request, plan):
        return 0.0
    return price.usd_per_hour


def gke_free_tier_applies(request: EstimateRequest, plan: CloudPlan) -> bool:
    """Whether GKE's free-tier credit covers this cluster's fee; refuses a regional cluster."""
    if request.gke_free_tier is None:
        return plan.zonal
    if request.gke_free_tier and not plan.zonal:
        raise ConfigError(
            f"--gke-free-tier: GKE's free tier never covers a regional cluster, and "
            f"{plan.cluster_location} is a region (clouds.gcp.region)",
            hint="leave the flag out (the fee is then charged), or price a zonal cluster: "
            f"--set clouds.gcp.region={plan.cluster_location}-a",
        )
    return request.gke_free_tier


def _cloud_costs(
    prices: PriceCatalog,
    request: EstimateRequest,
    plan: CloudPlan,
    used: list[PriceUsed],
    warnings: list[str],
) -> _CloudCosts:
    cpu_entry = prices.instance(plan.cloud, plan.region, plan.cpu_instance)
    if request.capacity is Capacity.SPOT and cpu_entry.spot is None:
        warnings.append(
            f"{plan.cloud.value}: {plan.cpu_instance} has no spot price, so it is priced on "
            f"demand: {cpu_entry.spot_unavailable}"
        )
    gpu_entry = prices.instance(plan.cloud, plan.region, plan.gpu_instance)
    if request.capacity is Capacity.SPOT and gpu_entry.spot is None:
        warnings.append(
            f"{plan.cloud.value}: {plan.gpu_instance} has no spot price, so it is priced on "
            f"demand: {gpu_entry.spot_unavailable}"
        )
    cpu_hourly = _record(prices, plan, plan.cpu_instance, request.capacity, used)
    gpu_hourly = _gpu_hourly(prices, plan, request.capacity, used)
    disk = prices.region(plan.cloud, plan.region).disk
    used.append(
        _sourced(plan, f"disk ({disk.kind})", "-", disk.usd_per_gb_month, "USD/GB-month", disk)
    )
    local = prices.region(plan.cloud, plan.region).gpu_local_disk
    local_month = 0.0
    if request.gpu_local_disk and local is not None:
        used.append(
            _sourced(
                plan,
                f"GPU node local disk ({local.kind})",
                "-",
                local.usd_per_gb_month,
                "USD/GB-month",
                local,
            )
        )
        local_month = local.gb * local.usd_per_gb_month
    gpu = catalog.INSTANCE_TYPES[plan.cloud][plan.gpu_instance].gpu
    gpu_tps = (
        request.workload.gpu_tokens_per_second
        or prices.throughput_for(gpu, request.gpu_model).tokens_per_second
    )
    cpu_tps = (
        request.workload.cpu_tokens_per_second
        or prices.throughput_for(None, request.cpu_model).tokens_per_second
    )
    return _CloudCosts(
        plan=plan,
        cpu_nodes=_cpu_nodes(request, plan),
        cpu_hourly=cpu_hourly,
        gpu_hourly=gpu_hourly,
        control_plane=_control_plane_hourly(prices, request, plan, used),
        disk_per_gb_month=disk.usd_per_gb_month,
        gpu_tps=gpu_tps,
        gpu_local_disk_month=local_month,
        cpu_tps=cpu_tps,
    )


def _cpu_nodes(request: EstimateRequest, plan: CloudPlan) -> int:
    node = fit.allocatable(plan.cloud, plan.cpu_instance)
    try:
        return fit.nodes_needed(list(request.cpu_pods), node, plan.cpu_instance)
    except fit.DoesNotFit as exc:
        raise ConfigError(
            f"{plan.cloud.value}: {exc}",
            hint="lower cpu.resources.requests or router.resources.requests, or price a larger "
            "CPU instance type with --instance-type",
        ) from None


def _per_unit(total: float, amount: float, scale: float = 1.0) -> float | None:
    return total / amount * scale if amount > 0 else None


def _scenario(request: EstimateRequest, costs: _CloudCosts, mode: Mode) -> ScenarioCost:
    hours = request.hours_per_month
    months = hours / HOURS_PER_MONTH
    workload = request.workload
    cpu_compute = costs.cpu_hourly * hours * costs.cpu_nodes
    cpu_disk = request.cpu_disk_gb * costs.disk_per_gb_month * months * costs.cpu_nodes
    gpu_hours = {
        Mode.CPU: 0.0,
        Mode.GPU: hours,
        Mode.SCALE_TO_ZERO: gpu_node_hours(workload, hours, costs.gpu_tps),
    }[mode]
    compute = cpu_compute + costs.gpu_hourly * gpu_hours
    gpu_disk_month = request.gpu_disk_gb * costs.disk_per_gb_month + costs.gpu_local_disk_month
    disk = cpu_disk + gpu_disk_month * gpu_hours / HOURS_PER_MONTH
    control_plane = costs.control_plane * hours
    total = compute + disk + control_plane
    requests = workload.gpu_requests_per_day * hours / 24.0
    tokens = requests * workload.avg_output_tokens
    plan = costs.plan
    cpu_nodes = f"{costs.cpu_nodes} x {plan.cpu_instance}"
    nodes = cpu_nodes if mode is Mode.CPU else f"{cpu_nodes} + {plan.gpu_instance}"
    return ScenarioCost(
        cloud=plan.cloud.value,
        mode=mode,
        region=plan.region,
        nodes=nodes,
        cpu_nodes=costs.cpu_nodes,
        gpu_node_hours=gpu_hours,
        compute_usd=compute,
        control_plane_usd=control_plane,
        disk_usd=disk,
        total_usd=total,
        output_tokens=tokens,
        requests=requests,
        usd_per_million_tokens=_per_unit(total, tokens, 1e6),
        usd_per_request=_per_unit(total, requests),
    )


def _total(rows: list[ScenarioCost], mode: Mode) -> ScenarioCost:
    mine = [r for r in rows if r.mode is mode]
    total = sum(r.total_usd for r in mine)
    tokens = sum(r.output_tokens for r in mine)
    requests = sum(r.requests for r in mine)
    return ScenarioCost(
        cloud="total",
        mode=mode,
        region="-",
        nodes=f"{len(mine)} clusters",
        cpu_nodes=sum(r.cpu_nodes for r in mine),
        gpu_node_hours=sum(r.gpu_node_hours for r in mine),
        compute_usd=sum(r.compute_usd for r in mine),
        control_plane_usd=sum(r.control_plane_usd for r in mine),
        disk_usd=sum(r.disk_usd for r in mine),
        total_usd=total,
        output_tokens=tokens,
        requests=requests,
        usd_per_million_tokens=_per_unit(total, tokens, 1e6),
        usd_per_request=_per_unit(total, requests),
    )


def _capacity_warnings(request: EstimateRequest, costs: _CloudCosts) -> list[str]:
    workload = request.workload
    cloud = costs.plan.cloud.value
    warnings = []
    active_seconds_per_day = workload.active_hours_per_day * 3600.0
    needed = workload.gpu_requests_per_day * workload.avg_output_tokens / active_seconds_per_day
    if needed > costs.cpu_tps:
        warnings.append(
            f"{cloud}: the workload needs {needed:.1f} output tokens/s on average; one CPU replica "
            f"gives about {costs.cpu_tps:g}, so CPU-only cannot keep up (its per-token figures "
            "assume it could)"
        )
    if needed > costs.gpu_tps:
        warnings.append(
            f"{cloud}: the workload needs {needed:.1f} output tokens/s on average; one GPU "
            f"replica gives about {costs.gpu_tps:g} per request stream, so one GPU node is "
            "saturated: add replicas (gpu.maxReplicas) or parallel slots"
        )
    return warnings


def _assumptions(request: EstimateRequest, costs: list[_CloudCosts]) -> list[str]:
    w = request.workload
    nodes = ", ".join(f"{c.plan.cloud.value} {c.cpu_nodes} x {c.plan.cpu_instance}" for c in costs)
    tps = ", ".join(f"{c.plan.cloud.value} GPU {c.gpu_tps:g} / CPU {c.cpu_tps:g}" for c in costs)
    control = []
    if not request.include_control_plane:
        control.append("control-plane fees left out (--no-control-plane)")
    else:
        control.append("EKS control plane $0.10/h")
        control.append(f"AKS {request.aks_tier.value} tier")
        for c in costs:
            if c.plan.cloud is not CloudName.GCP:
                continue
            where = c.plan.cluster_location
            if gke_free_tier_applies(request, c.plan):
                control.append(
                    f"GKE fee covered by the free tier: {where} is a zone (one zonal or Autopilot "
                    "cluster per billing account; --no-gke-free-tier if it is taken)"
                )
            elif c.plan.zonal:
                control.append(f"GKE fee $0.10/h for zonal {where} (--no-gke-free-tier)")
            else:
                control.append(
                    f"GKE fee $0.10/h: {where} is a regional cluster, which the free tier never "
                    "covers (a regional pool runs that many nodes in each of its zones; not "
                    "counted)"
                )
    return [
        f"{request.hours_per_month:g} hours per month; {request.capacity.value} capacity where "
        "the cloud sells it",
        f"CPU nodes per cluster, in every scenario: {nodes}, the fewest that hold the CPU "
        "tier's and the routers' pod requests within each node's allocatable (less the cloud's "
        "kubelet and eviction reserve; its own DaemonSets and add-ons not counted, so at least "
        "this many); GPU 24/7 adds 1 GPU node; scale-to-zero adds 1 GPU node only while it is up",
        f"workload per cluster: {w.gpu_requests_per_day:g} GPU requests/day x "
        f"{w.avg_output_tokens:g} output tokens, arriving at random over "
        f"{w.active_hours_per_day:g} h of each day",
        f"throughput, output tokens/s per replica, one request at a time: {tps}",
        f"scale-to-zero: the GPU node stays up {w.idle_tail_s:g} s after the last request (KEDA "
        f"cooldown {w.idle_timeout_s:g} s + cluster-autoscaler scale-down delay "
        f"{w.scale_down_delay_s:g} s); cold start {w.cold_start_s:g} s (node start + model "
        "load), billed; up-share of idle time u = 1 - 1/(e^(rate x idle tail) + rate x cold "
        "start)",
        f"disks: {request.cpu_disk_gb:g} GB per CPU node, {request.gpu_disk_gb:g} GB per GPU "
        "node while it exists" + _local_disk_note(request, costs),
        "; ".join(control),
        "not included: load balancers, NAT gateways, egress, public IPs, logging and "
        "monitoring, image registry, model storage, taxes and discounts (savings plans, CUDs)",
    ]


def _local_disk_note(request: EstimateRequest, costs: list[_CloudCosts]) -> str:
    """What the GPU nodes' local disk (issue 30) adds, where a cloud bills it apart."""
    billed = [c for c in costs if c.gpu_local_disk_month > 0]
    if not request.gpu_local_disk or not billed:
        return ""
    each = ", ".join(
        f"{c.plan.cloud.value} ${c.gpu_local_disk_month:.2f} a node-month" for c in billed
    )
    return (
        f", plus the GPU node's local disk (gpu.model.volume local; {each}) while it exists: "
        "GKE bills Local SSD beside the node, while the EKS instance store and the AKS temp "
        "disk come with the VM"
    )


def estimate(
    prices: PriceCatalog,
    request: EstimateRequest,
    egress_prices: egress.EgressCatalog | None = None,
) -> Estimate:
    """Price every requested scenario in every requested cloud, and the totals."""
    request.workload.validate()
    if not request.hours_per_month > 0 or not math.isfinite(request.hours_per_month):
        raise ConfigError(
            f"--hours-per-month must be above 0, got {request.hours_per_month}",
            hint="allowed values: > 0 (730 is an average month)",
        )
    if not request.clouds:
        raise ConfigError("no cloud to estimate", hint="allowed clouds: aws, azure, gcp, all")
    used: list[PriceUsed] = []
    warnings: list[str] = []
    costs = [_cloud_costs(prices, request, plan, used, warnings) for plan in request.clouds]
    rows: list[ScenarioCost] = []
    totals: list[ScenarioCost] = []
    for mode in request.modes:
        mode_rows = [_scenario(request, c, mode) for c in costs]
        rows.extend(mode_rows)
        if len(costs) > 1:
            totals.append(_total(mode_rows, mode))
    for c in costs:
        warnings.extend(_capacity_warnings(request, c))
    remote = egress.remote_rows(
        egress_prices or egress.load_egress(),
        {c.plan.cloud: c.gpu_hourly for c in costs},
        request.workload.cold_start_s,
        # The billed node stays up for the whole idle tail: cooldown + scale-down delay.
        request.workload.idle_tail_s,
    )
    # A custom GPU model has no size in the catalog: its store row is left out.
    gpu_model = catalog.MODELS.get(request.gpu_model)
    store = (
        model_store.store_rows(
            model_store.load_storage(), tuple(c.plan.cloud for c in costs), gpu_model.file_bytes
        )
        if gpu_model is not None
        else []
    )
    return Estimate(
        rows=rows,
        totals=totals,
        assumptions=_assumptions(request, costs),
        warnings=warnings,
        prices=used,
        remote=remote,
        model_store=store,
    )
