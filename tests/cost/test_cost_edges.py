"""Edges of the cost model that mutation testing showed no test pinned (issue 20).

Round-number prices, so every figure can be worked out by hand. The scale-to-zero node-hours
and the GKE fee are left to tests/cost/test_cost.py (issue 15 changes both);
`benchmarks/mutation.py --core cost` reruns these against each mutant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from llmctl import catalog
from llmctl.catalog import CloudName, InstanceType
from llmctl.cost import egress, model
from llmctl.cost.model import (
    HOURS_PER_MONTH,
    AksTier,
    CloudPlan,
    Estimate,
    EstimateRequest,
    Mode,
    ScenarioCost,
    Workload,
    busy_hours,
    down_share_of_idle_time,
    estimate,
)
from llmctl.cost.prices import Capacity, PriceCatalog, parse_catalog
from llmctl.errors import ConfigError
from tests.cost.known import SOURCE, catalog_yaml, per_day

D = SOURCE
CATALOG = catalog_yaml(f"""
  aws:
    control_plane:
      standard: {{usd_per_hour: 0.10, {D}}}
    regions:
      us-east-1:
        instances:
          t3.small:
            on_demand: {{usd_per_hour: 0.02, {D}}}
            spot: {{usd_per_hour: 0.01, {D}}}
          g4dn.xlarge:
            on_demand: {{usd_per_hour: 0.50, {D}}}
            spot: {{usd_per_hour: 0.20, {D}, note: moves daily}}
        disk: {{kind: gp3, usd_per_gb_month: 0.10, {D}}}
  azure:
    control_plane:
      free: {{usd_per_hour: 0.0, {D}}}
      standard: {{usd_per_hour: 0.10, {D}}}
    regions:
      eastus:
        instances:
          Standard_B2s:
            on_demand: {{usd_per_hour: 0.04, {D}}}
            spot_unavailable: B-series is not sold as spot
          Standard_NC4as_T4_v3:
            on_demand: {{usd_per_hour: 0.50, {D}}}
            spot: {{usd_per_hour: 0.10, {D}}}
        disk: {{kind: standard-ssd, usd_per_gb_month: 0.10, {D}}}
      westeurope:
        instances:
          Standard_B2s:
            on_demand: {{usd_per_hour: 0.04, {D}}}
            spot: {{usd_per_hour: 0.01, {D}}}
          Standard_NC4as_T4_v3:
            on_demand: {{usd_per_hour: 0.60, {D}}}
            spot_unavailable: no T4 spot capacity here
        disk: {{kind: standard-ssd, usd_per_gb_month: 0.10, {D}}}
  gcp:
    control_plane:
      standard: {{usd_per_hour: 0.10, {D}}}
    regions:
      us-central1:
        instances:
          e2-standard-2:
            on_demand: {{usd_per_hour: 0.05, {D}}}
            spot: {{usd_per_hour: 0.02, {D}}}
          n1-standard-16:
            on_demand: {{usd_per_hour: 0.80, {D}}}
            spot: {{usd_per_hour: 0.20, {D}}}
        accelerators:
          nvidia-tesla-t4:
            on_demand: {{usd_per_hour: 0.40, {D}}}
            spot: {{usd_per_hour: 0.10, {D}}}
        disk: {{kind: pd-balanced, usd_per_gb_month: 0.10, {D}}}
""")

AWS = CloudPlan(CloudName.AWS, "us-east-1", "t3.small", "g4dn.xlarge")
AZURE = CloudPlan(CloudName.AZURE, "eastus", "Standard_B2s", "Standard_NC4as_T4_v3")
B2S_WARNING = (
    "azure: Standard_B2s has no spot price, so it is priced on demand: B-series is not sold as spot"
)


# GCP bills GPUs apart from the machine: a machine type with two T4s, added for these tests.
TWO_T4 = InstanceType("n1-standard-16", CloudName.GCP, 16, 60, "t4", 2)
GCP = CloudPlan(CloudName.GCP, "us-central1", "e2-standard-2", "n1-standard-16")


@pytest.fixture(scope="module")
def prices() -> Iterator[PriceCatalog]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(catalog.INSTANCE_TYPES[CloudName.GCP], TWO_T4.name, TWO_T4)
        yield parse_catalog(CATALOG)


def row(result: Estimate, cloud: str, mode: Mode) -> ScenarioCost:
    """One cloud's row, or with cloud="total" the sum over the clouds (wherever it is kept)."""
    rows = [*result.rows, *getattr(result, "totals", [])]
    (found,) = [r for r in rows if r.cloud == cloud and r.mode is mode]
    return found


def fees(result: Estimate) -> str:
    """The assumptions' line on control-plane fees."""
    (line,) = [a for a in result.assumptions if "control" in a and "plane" in a]
    return line


# --- warnings ------------------------------------------------------------------------------


def test_no_warning_when_every_spot_price_exists(prices: PriceCatalog) -> None:
    assert estimate(prices, EstimateRequest(clouds=(AWS,))).warnings == []


def test_only_the_instance_without_a_spot_price_is_warned_about(prices: PriceCatalog) -> None:
    assert estimate(prices, EstimateRequest(clouds=(AZURE,))).warnings == [B2S_WARNING]
    # on demand was asked for: nothing to warn about
    on_demand = EstimateRequest(clouds=(AZURE,), capacity=Capacity.ON_DEMAND)
    assert estimate(prices, on_demand).warnings == []


# 10 output tokens/s is the CPU's throughput in the catalog, 50 the GPU's: 864 requests/day x
# 1000 tokens over 86,400 s is exactly 10 tokens/s.
@pytest.mark.parametrize(
    ("requests", "tokens", "active_hours", "cpu_warns", "gpu_warns"),
    [
        (100, 300, 24, False, False),
        (864, 1000, 24, False, False),  # exactly what one CPU node gives: it keeps up
        (865, 1000, 24, True, False),
        (432, 1000, 12, False, False),  # the same 10 tokens/s, in 12 active hours
        (433, 1000, 12, True, False),
        (4320, 1000, 24, True, False),  # exactly one GPU stream
        (4321, 1000, 24, True, True),
    ],
)
def test_capacity_warnings_at_their_boundaries(
    prices: PriceCatalog,
    requests: float,
    tokens: float,
    active_hours: float,
    cpu_warns: bool,
    gpu_warns: bool,
) -> None:
    workload = Workload(
        gpu_requests_per_day=requests, avg_output_tokens=tokens, active_hours_per_day=active_hours
    )
    warnings = estimate(prices, EstimateRequest(clouds=(AWS,), workload=workload)).warnings
    assert any("CPU-only cannot keep up" in w for w in warnings) is cpu_warns
    assert any("one GPU node is saturated" in w for w in warnings) is gpu_warns
    assert len(warnings) == cpu_warns + gpu_warns


def test_capacity_warning_text(prices: PriceCatalog) -> None:
    workload = Workload(gpu_requests_per_day=1e5, avg_output_tokens=2000)
    warnings = estimate(prices, EstimateRequest(clouds=(AWS,), workload=workload)).warnings
    # 1e5 x 2000 / 86,400 = 2314.8 tokens/s
    assert warnings == [
        "aws: the workload needs 2314.8 output tokens/s on average; one CPU replica gives about "
        "10, so CPU-only cannot keep up (its per-token figures assume it could)",
        "aws: the workload needs 2314.8 output tokens/s on average; one GPU replica gives about "
        "50 per request stream, so one GPU node is saturated: add replicas (gpu.maxReplicas) "
        "or parallel slots",
    ]


def test_throughput_flags_replace_the_table(prices: PriceCatalog) -> None:
    workload = per_day(865, 1000, cpu_tokens_per_second=20, gpu_tokens_per_second=5)
    warnings = estimate(prices, EstimateRequest(clouds=(AWS,), workload=workload)).warnings
    assert len(warnings) == 1 and "one GPU replica gives about 5 per" in warnings[0]


# --- the prices used -----------------------------------------------------------------------


def test_prices_used_say_which_capacity_each_price_is(prices: PriceCatalog) -> None:
    used = estimate(prices, EstimateRequest(clouds=(AZURE,))).prices
    by_item = {p.item: p for p in used}
    assert by_item["Standard_B2s"].capacity == "on-demand"  # no spot price: on demand
    assert by_item["Standard_B2s"].price == 0.04
    assert by_item["Standard_NC4as_T4_v3"].capacity == "spot"
    assert by_item["Standard_NC4as_T4_v3"].price == 0.10
    assert (by_item["Standard_B2s"].cloud, by_item["Standard_B2s"].region) == ("azure", "eastus")
    assert by_item["Standard_B2s"].unit == "USD/hour"
    assert (by_item["Standard_B2s"].source, by_item["Standard_B2s"].date) == ("test", "2026-01-01")


def test_prices_used_list_the_control_plane_and_the_disk(prices: PriceCatalog) -> None:
    used = estimate(prices, EstimateRequest(clouds=(AWS,))).prices
    assert [(p.item, p.capacity, p.price, p.unit) for p in used] == [
        ("t3.small", "spot", 0.01, "USD/hour"),
        ("g4dn.xlarge", "spot", 0.20, "USD/hour"),
        ("disk (gp3)", "-", 0.10, "USD/GB-month"),
        ("control plane (standard)", "-", 0.10, "USD/cluster-hour"),
    ]
    assert [p.note for p in used] == [None, "moves daily", None, None]
    assert {(p.cloud, p.region, p.source, p.date) for p in used} == {
        ("aws", "us-east-1", "test", "2026-01-01")
    }


def test_on_demand_prices_are_labelled_on_demand(prices: PriceCatalog) -> None:
    used = estimate(prices, EstimateRequest(clouds=(AWS,), capacity=Capacity.ON_DEMAND)).prices
    assert [(p.item, p.capacity, p.price) for p in used][:2] == [
        ("t3.small", "on-demand", 0.02),
        ("g4dn.xlarge", "on-demand", 0.50),
    ]


# --- control-plane fees --------------------------------------------------------------------


def test_eks_fee_and_its_assumption(prices: PriceCatalog) -> None:
    result = estimate(prices, EstimateRequest(clouds=(AWS,), modes=(Mode.CPU,)))
    assert row(result, "aws", Mode.CPU).control_plane_usd == pytest.approx(0.10 * 730)
    assert fees(result).split("; ")[:2] == ["EKS control plane $0.10/h", "AKS free tier"]


def test_no_control_plane_leaves_every_fee_out(prices: PriceCatalog) -> None:
    request = EstimateRequest(
        clouds=(AWS, AZURE), include_control_plane=False, aks_tier=AksTier.STANDARD
    )
    result = estimate(prices, request)
    assert all(r.control_plane_usd == 0 for r in result.rows)
    assert fees(result) == "control-plane fees left out (--no-control-plane)"
    # the price is still listed, so the reader sees what was left out
    assert any(p.item == "control plane (standard)" for p in result.prices)


def test_aks_tiers(prices: PriceCatalog) -> None:
    free = estimate(prices, EstimateRequest(clouds=(AZURE,), modes=(Mode.CPU,)))
    assert row(free, "azure", Mode.CPU).control_plane_usd == 0
    assert "AKS free tier" in fees(free).split("; ")
    assert any(p.item == "control plane (free)" for p in free.prices)
    standard = estimate(
        prices, EstimateRequest(clouds=(AZURE,), modes=(Mode.CPU,), aks_tier=AksTier.STANDARD)
    )
    assert row(standard, "azure", Mode.CPU).control_plane_usd == pytest.approx(0.10 * 730)
    assert "AKS standard tier" in fees(standard).split("; ")
    assert any(p.item == "control plane (standard)" for p in standard.prices)


# --- rows and totals -----------------------------------------------------------------------


def test_cpu_and_gpu_rows_by_hand(prices: PriceCatalog) -> None:
    # 730 h, spot: CPU 0.01/h, GPU 0.20/h, disks 30 GB CPU and 100 GB GPU at 0.10/GB-month,
    # EKS 0.10/h; 100 requests/day x 300 tokens. The default CPU tier and routers need two
    # t3.small nodes (cost/fit.py), each with its disk.
    result = estimate(prices, EstimateRequest(clouds=(AWS,), modes=(Mode.CPU, Mode.GPU)))
    cpu = row(result, "aws", Mode.CPU)
    assert (cpu.nodes, cpu.region, cpu.gpu_node_hours) == ("2 x t3.small", "us-east-1", 0.0)
    assert cpu.cpu_nodes == 2
    assert cpu.compute_usd == pytest.approx(2 * 7.30)
    assert cpu.disk_usd == pytest.approx(2 * 3.0)
    assert cpu.total_usd == pytest.approx(2 * 7.30 + 2 * 3.0 + 73.0)
    assert cpu.requests == pytest.approx(100 * 730 / 24)
    assert cpu.output_tokens == pytest.approx(300 * 100 * 730 / 24)
    assert cpu.usd_per_million_tokens == pytest.approx(cpu.total_usd / cpu.output_tokens * 1e6)
    assert cpu.usd_per_request == pytest.approx(cpu.total_usd / cpu.requests)
    gpu = row(result, "aws", Mode.GPU)
    assert (gpu.nodes, gpu.gpu_node_hours) == ("2 x t3.small + g4dn.xlarge", 730)
    assert gpu.compute_usd == pytest.approx(2 * 7.30 + 0.20 * 730)
    assert gpu.disk_usd == pytest.approx(2 * 3.0 + 10.0)
    assert gpu.total_usd == pytest.approx(gpu.compute_usd + gpu.disk_usd + 73.0)
    assert [r.mode for r in result.rows] == [Mode.CPU, Mode.GPU]  # one cloud: no total rows


def test_half_a_month_halves_the_disks(prices: PriceCatalog) -> None:
    result = estimate(
        prices, EstimateRequest(clouds=(AWS,), modes=(Mode.GPU,), hours_per_month=365)
    )
    assert row(result, "aws", Mode.GPU).disk_usd == pytest.approx((2 * 3.0 + 10.0) / 2)


def test_totals_row_sums_the_clouds(prices: PriceCatalog) -> None:
    result = estimate(prices, EstimateRequest(clouds=(AWS, AZURE), modes=(Mode.GPU,)))
    aws, azure = row(result, "aws", Mode.GPU), row(result, "azure", Mode.GPU)
    total = row(result, "total", Mode.GPU)
    assert (total.cloud, total.region, total.nodes, total.mode) == (
        "total",
        "-",
        "2 clusters",
        Mode.GPU,
    )
    for name in (
        "gpu_node_hours",
        "compute_usd",
        "control_plane_usd",
        "disk_usd",
        "total_usd",
        "output_tokens",
        "requests",
        "cpu_nodes",
    ):
        assert getattr(total, name) == pytest.approx(getattr(aws, name) + getattr(azure, name))
    assert total.cpu_nodes == 4  # two per cluster
    assert total.usd_per_million_tokens == pytest.approx(
        total.total_usd / total.output_tokens * 1e6, rel=1e-12
    )
    assert total.usd_per_request == pytest.approx(total.total_usd / total.requests)


def test_no_traffic_has_no_per_unit_figures(prices: PriceCatalog) -> None:
    workload = Workload(gpu_requests_per_day=0)
    result = estimate(prices, EstimateRequest(clouds=(AWS, AZURE), workload=workload))
    for r in (row(result, c, m) for c in ("aws", "azure", "total") for m in Mode):
        assert r.usd_per_million_tokens is None and r.usd_per_request is None


# --- the scale-to-zero building blocks -----------------------------------------------------


def test_busy_hours_by_hand() -> None:
    # 240 requests/day x 500 tokens over 720 h = 3.6M tokens at 50 tokens/s = 20 h
    workload = Workload(gpu_requests_per_day=240, avg_output_tokens=500)
    assert busy_hours(workload, 720, 50) == pytest.approx(20.0)


def test_down_share_of_idle_time() -> None:
    assert down_share_of_idle_time(0, 1, 1) == 1.0
    assert down_share_of_idle_time(-1, 1, 1) == 1.0
    # 1 / (e^(2 x 0.5) + 2 x 0.25)
    assert down_share_of_idle_time(2, 0.5, 0.25) == pytest.approx(1 / (math.e + 0.5))
    # a huge rate x cooldown does not overflow: the exponent stops at 700 (e^700 ~ 1e304)
    assert down_share_of_idle_time(1e6, 1e6, 0) == 1.0 / math.exp(700.0)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        ({"clouds": ()}, "no cloud to estimate"),
        ({"hours_per_month": 0}, "--hours-per-month must be above 0, got 0"),
        ({"hours_per_month": -1}, "--hours-per-month must be above 0"),
        ({"hours_per_month": math.nan}, "--hours-per-month must be above 0"),
        ({"hours_per_month": math.inf}, "--hours-per-month must be above 0"),
        ({"workload": Workload(avg_output_tokens=-1)}, "--avg-output-tokens"),
    ],
)
def test_estimate_checks_its_own_request(
    prices: PriceCatalog, request_kw: dict[str, object], message: str
) -> None:
    kw: dict[str, object] = {"clouds": (AWS,), **request_kw}
    with pytest.raises(ConfigError, match="^" + message):
        estimate(prices, EstimateRequest(**kw))  # type: ignore[arg-type]


def test_a_short_month_is_accepted(prices: PriceCatalog) -> None:
    result = estimate(
        prices, EstimateRequest(clouds=(AWS,), modes=(Mode.GPU,), hours_per_month=0.5)
    )
    assert row(result, "aws", Mode.GPU).gpu_node_hours == 0.5
    assert HOURS_PER_MONTH == 730.0


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"gpu_requests_per_day": -1}, "--gpu-requests-per-day must be a finite number >= 0"),
        ({"gpu_requests_per_day": math.inf}, "--gpu-requests-per-day"),
        ({"avg_output_tokens": math.nan}, "--avg-output-tokens"),
        ({"idle_timeout_s": -1}, "--idle-timeout must be a finite number >= 0, got -1"),
        ({"cold_start_s": -0.5}, "--cold-start"),
        ({"gpu_tokens_per_second": 0}, "--tokens-per-second must be a finite number > 0, got 0"),
        ({"gpu_tokens_per_second": math.inf}, "--tokens-per-second"),
        ({"cpu_tokens_per_second": 0}, "--cpu-tokens-per-second must be a finite number > 0"),
        ({"cpu_tokens_per_second": -2}, "--cpu-tokens-per-second"),
        ({"active_hours_per_day": 0}, "--active-hours must be above 0 and at most 24, got 0"),
        ({"active_hours_per_day": 24.5}, "--active-hours"),
        ({"active_hours_per_day": -3}, "--active-hours"),
    ],
)
def test_workload_rejects(kw: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError, match="^" + flag):
        Workload(**kw).validate()


def test_rejection_hint_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as positive:
        Workload(gpu_tokens_per_second=0).validate()
    assert positive.value.hint == "allowed values: numbers > 0"
    with pytest.raises(ConfigError) as non_negative:
        Workload(idle_timeout_s=-1).validate()
    assert non_negative.value.hint == "allowed values: numbers >= 0"
    with pytest.raises(ConfigError) as hours:
        Workload(active_hours_per_day=25).validate()
    assert hours.value.hint == "allowed values: 0 < hours <= 24"


@pytest.mark.parametrize(
    "kw",
    [
        {"active_hours_per_day": 24},
        {"active_hours_per_day": 0.5},
        {"gpu_tokens_per_second": 0.5, "cpu_tokens_per_second": 0.5},
        {"gpu_requests_per_day": 0, "avg_output_tokens": 0, "idle_timeout_s": 0, "cold_start_s": 0},
    ],
)
def test_workload_accepts_its_boundaries(kw: dict[str, float]) -> None:
    Workload(**kw).validate()


def test_assumption_lines_say_what_was_priced(prices: PriceCatalog) -> None:
    workload = per_day(240, 500, active_hours_per_day=12, gpu_tokens_per_second=40)
    request = EstimateRequest(
        clouds=(AWS, AZURE),
        workload=workload,
        hours_per_month=720,
        capacity=Capacity.ON_DEMAND,
        cpu_disk_gb=20,
        gpu_disk_gb=50,
    )
    lines = estimate(prices, request).assumptions
    assert lines[0] == "720 hours per month; on-demand capacity where the cloud sells it"
    for expected in (
        "CPU nodes per cluster, in every scenario: aws 2 x t3.small, azure 2 x Standard_B2s, "
        "the fewest that hold the CPU tier's and the routers' pod requests within each node's "
        "allocatable (less the cloud's kubelet and eviction reserve; its own DaemonSets and "
        "add-ons not counted, so at least this many); GPU 24/7 adds 1 GPU node; scale-to-zero "
        "adds 1 GPU node only while it is up",
        "workload per cluster: 240 GPU requests/day x 500 output tokens, arriving at random "
        "over 12 h of each day",
        "throughput, output tokens/s per replica, one request at a time: aws GPU 40 / CPU 10, "
        "azure GPU 40 / CPU 10",
        "disks: 20 GB per CPU node, 50 GB per GPU node while it exists",
        "not included: load balancers, NAT gateways, egress, public IPs, logging and "
        "monitoring, image registry, model storage, taxes and discounts (savings plans, CUDs)",
    ):
        assert expected in lines


def test_estimate_rejection_hints(prices: PriceCatalog) -> None:
    with pytest.raises(ConfigError) as no_cloud:
        estimate(prices, EstimateRequest(clouds=()))
    assert (no_cloud.value.message, no_cloud.value.hint) == (
        "no cloud to estimate",
        "allowed clouds: aws, azure, gcp, all",
    )
    with pytest.raises(ConfigError) as hours:
        estimate(prices, EstimateRequest(clouds=(AWS,), hours_per_month=0))
    assert hours.value.hint == "allowed values: > 0 (730 is an average month)"


def test_a_gpu_without_a_spot_price_is_warned_about(prices: PriceCatalog) -> None:
    plan = CloudPlan(CloudName.AZURE, "westeurope", "Standard_B2s", "Standard_NC4as_T4_v3")
    assert estimate(prices, EstimateRequest(clouds=(plan,))).warnings == [
        "azure: Standard_NC4as_T4_v3 has no spot price, so it is priced on demand: "
        "no T4 spot capacity here"
    ]
    on_demand = EstimateRequest(clouds=(plan,), capacity=Capacity.ON_DEMAND)
    assert estimate(prices, on_demand).warnings == []


def test_gcp_prices_each_attached_gpu(prices: PriceCatalog) -> None:
    result = estimate(prices, EstimateRequest(clouds=(GCP,), modes=(Mode.GPU,)))
    # spot: two CPU nodes at 0.02/h, GPU machine 0.20/h plus two T4s at 0.10/h
    assert row(result, "gcp", Mode.GPU).compute_usd == pytest.approx(
        (2 * 0.02 + 0.20 + 2 * 0.10) * 730
    )
    t4 = next(p for p in result.prices if p.item == "nvidia-tesla-t4 x2")
    assert (t4.capacity, t4.price) == ("spot", 0.10)


def test_less_than_one_request_a_month_still_has_per_unit_figures(prices: PriceCatalog) -> None:
    workload = Workload(gpu_requests_per_day=0.01, avg_output_tokens=10)
    cpu = row(estimate(prices, EstimateRequest(clouds=(AWS,), workload=workload)), "aws", Mode.CPU)
    assert cpu.requests == pytest.approx(0.01 * 730 / 24)  # 0.3 requests
    assert cpu.usd_per_request == pytest.approx(cpu.total_usd / cpu.requests)


# --- GKE's fee and the scale-to-zero idle tail ------------------------------------------------

GCP_ZONAL = CloudPlan(
    CloudName.GCP, "us-central1", "e2-standard-2", "n1-standard-16", location="us-central1-a"
)


@pytest.mark.parametrize(
    ("plan", "free_tier", "line"),
    [
        (
            GCP_ZONAL,
            None,
            "GKE fee covered by the free tier: us-central1-a is a zone (one zonal "
            "or Autopilot cluster per billing account; --no-gke-free-tier if it is taken)",
        ),
        (GCP_ZONAL, False, "GKE fee $0.10/h for zonal us-central1-a (--no-gke-free-tier)"),
        (
            GCP,
            None,
            "GKE fee $0.10/h: us-central1 is a regional cluster, which the free tier "
            "never covers (a regional pool runs that many nodes in each of its zones; not "
            "counted)",
        ),
    ],
)
def test_gke_fee_assumption(
    prices: PriceCatalog, plan: CloudPlan, free_tier: bool | None, line: str
) -> None:
    request = EstimateRequest(clouds=(AWS, plan), modes=(Mode.CPU,), gke_free_tier=free_tier)
    assert fees(estimate(prices, request)) == "EKS control plane $0.10/h; AKS free tier; " + line


def test_gke_free_tier_refused_for_a_regional_cluster(prices: PriceCatalog) -> None:
    with pytest.raises(ConfigError) as error:
        estimate(prices, EstimateRequest(clouds=(GCP,), gke_free_tier=True))
    assert error.value.message == (
        "--gke-free-tier: GKE's free tier never covers a regional cluster, and us-central1 is a "
        "region (clouds.gcp.region)"
    )
    assert error.value.hint == (
        "leave the flag out (the fee is then charged), or price a zonal cluster: "
        "--set clouds.gcp.region=us-central1-a"
    )


def test_gcp_locations() -> None:
    assert model.gcp_region_of("us-central1-a") == "us-central1"
    assert model.gcp_region_of("us-central1") == "us-central1"
    assert model.is_gcp_zone("europe-west1-b") and not model.is_gcp_zone("europe-west1")
    assert (GCP_ZONAL.cluster_location, GCP_ZONAL.zonal) == ("us-central1-a", True)
    assert (GCP.cluster_location, GCP.zonal) == ("us-central1", False)


def test_scale_to_zero_assumption_names_the_whole_idle_tail(prices: PriceCatalog) -> None:
    workload = Workload(idle_timeout_s=120, scale_down_delay_s=480, cold_start_s=90)
    assert workload.idle_tail_s == 600
    lines = estimate(prices, EstimateRequest(clouds=(AWS,), workload=workload)).assumptions
    assert (
        "scale-to-zero: the GPU node stays up 600 s after the last request (KEDA cooldown 120 s "
        "+ cluster-autoscaler scale-down delay 480 s); cold start 90 s (node start + model "
        "load), billed; up-share of idle time u = 1 - 1/(e^(rate x idle tail) + rate x cold "
        "start)"
    ) in lines


def test_scale_down_delay_is_checked() -> None:
    with pytest.raises(ConfigError, match="^--scale-down-delay must be a finite number >= 0"):
        Workload(scale_down_delay_s=-1).validate()
    Workload(scale_down_delay_s=0).validate()


def test_one_cloud_has_no_totals(prices: PriceCatalog) -> None:
    result = estimate(prices, EstimateRequest(clouds=(AWS,)))
    assert result.totals == []
    assert [r.cloud for r in result.rows] == ["aws"] * 3


def test_no_gke_free_tier_is_accepted_for_a_regional_cluster(prices: PriceCatalog) -> None:
    request = EstimateRequest(clouds=(GCP,), modes=(Mode.CPU,), gke_free_tier=False)
    assert row(estimate(prices, request), "gcp", Mode.CPU).control_plane_usd == pytest.approx(73)


def test_remote_rows_price_waking_each_clouds_gpu(prices: PriceCatalog) -> None:
    # issue 16: serving from another cloud beside waking the local GPU, per cloud
    workload = Workload(cold_start_s=90, idle_timeout_s=120)
    result = estimate(prices, EstimateRequest(clouds=(AWS, AZURE), workload=workload))
    assert result.remote == egress.remote_rows(
        egress.load_egress(),
        {CloudName.AWS: 0.20, CloudName.AZURE: 0.10},
        90,
        workload.idle_tail_s,
    )
    assert [r.serving.cloud for r in result.remote] == ["aws", "azure"]


def test_a_cpu_pod_larger_than_an_empty_node_is_a_config_error(prices: PriceCatalog) -> None:
    from llmctl.config import Stack
    from llmctl.cost import fit

    resources = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}}
    stack = Stack.model_validate({"cpu": {"resources": resources}})
    request = EstimateRequest(clouds=(AWS,), cpu_pods=tuple(fit.cpu_tier_pods(stack)))
    with pytest.raises(ConfigError) as info:
        estimate(prices, request)
    assert (info.value.message, info.value.hint) == (
        "aws: a cpu-llm-server pod requests 2000m CPU and 1024Mi memory, more than an empty "
        "t3.small offers (1930m CPU and 1572Mi memory allocatable), so it would never be "
        "scheduled",
        "lower cpu.resources.requests or router.resources.requests, or price a larger CPU "
        "instance type with --instance-type",
    )


def test_the_model_store_rows_follow_the_clouds_and_the_gpu_model(prices: PriceCatalog) -> None:
    """Issue 30: a row per cloud for the GPU model's copy in its store, in the clouds' order."""
    from llmctl.cost import model_store

    workload = per_day(100, 300, cpu_tokens_per_second=20, gpu_tokens_per_second=20)
    request = EstimateRequest(clouds=(AZURE, AWS), gpu_model="llama-2-13b-chat", workload=workload)
    result = estimate(prices, request)
    size = catalog.MODELS["llama-2-13b-chat"].file_bytes
    assert result.model_store == model_store.store_rows(
        model_store.load_storage(), (CloudName.AZURE, CloudName.AWS), size
    )
    assert [r.cloud for r in result.model_store] == ["azure", "aws"]


def test_a_custom_gpu_model_has_no_store_row(prices: PriceCatalog) -> None:
    workload = per_day(100, 300, cpu_tokens_per_second=20, gpu_tokens_per_second=20)
    request = EstimateRequest(clouds=(AWS,), gpu_model="my-own-model", workload=workload)
    result = estimate(prices, request)
    assert result.model_store == []
