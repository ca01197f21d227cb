"""`--live`: refresh the catalog's prices from the providers' public price APIs.

An adapter: it talks to one API per cloud and returns a new `PriceCatalog` in which the fetched
figures replace the shipped ones (source "live: ...", today's date). A cloud whose API cannot be
reached, refuses, or answers without the price keeps its catalog figures, with a warning.

- AWS: the Price List API (`pricing` GetProducts, served from us-east-1) for on-demand, and EC2
  `describe_spot_price_history` in the cluster's region for spot, through boto3. Both need AWS
  credentials.
- Azure: the Retail Prices API, no account needed, with an OData `$filter`.
- GCP: the Cloud Billing Catalog API (`services/{id}/skus`) with an API key. GCP prices vCPUs,
  memory and GPUs separately: a machine's price is vCPUs x core SKU + GiB x RAM SKU.

Every endpoint is set in `PriceEndpoints` (from the environment), so tests point all three at
local servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import statistics
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.cost.prices import Capacity, PriceCatalog
from llmctl.extras import extra_for_module, install_hint

AZURE_RETAIL_URL = "https://prices.azure.com/api/retail/prices"
GCP_BILLING_URL = "https://cloudbilling.googleapis.com"
GCP_COMPUTE_SERVICE_ID = "6F81-5844-456A"  # "Compute Engine" in the Cloud Billing Catalog
AWS_PRICING_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and two others)
MAX_PAGES = 20  # bound on NextPageLink / nextPageToken loops

# GCP SKU descriptions name GPUs like "Nvidia Tesla T4 GPU running in Americas".
GCP_GPU_SKU_NAMES: dict[str, str] = {
    "nvidia-tesla-t4": "Tesla T4 GPU",
    "nvidia-l4": "L4 GPU",
}

# AWS region code -> the Price List's `location`-independent filter uses regionCode directly.
_AWS_LINUX_FILTERS: dict[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


@dataclass(frozen=True)
class PriceEndpoints:
    """Where each price API lives. The one place to change them (tests use 127.0.0.1)."""

    aws_pricing: str | None = None  # None: boto3's default, which honours AWS_ENDPOINT_URL
    aws_ec2: str | None = None
    azure_retail: str = AZURE_RETAIL_URL
    gcp_billing: str = GCP_BILLING_URL
    gcp_api_key: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PriceEndpoints:
        return cls(
            aws_pricing=env.get("LLMCTL_AWS_PRICING_ENDPOINT") or None,
            aws_ec2=env.get("LLMCTL_AWS_EC2_ENDPOINT") or None,
            azure_retail=env.get("LLMCTL_AZURE_PRICES_URL") or AZURE_RETAIL_URL,
            gcp_billing=env.get("LLMCTL_GCP_BILLING_URL") or GCP_BILLING_URL,
            gcp_api_key=env.get("LLMCTL_GCP_API_KEY") or None,
            timeout_s=float(env.get("LLMCTL_PRICES_TIMEOUT", "10")),
        )


class LivePriceError(Exception):
    """An API answered, but not with the price asked for."""


@dataclass(frozen=True)
class LiveQuote:
    """Prices fetched for one priced item (instance type or accelerator) in one region."""

    cloud: CloudName
    region: str
    item: str
    kind: str  # "instances" or "accelerators"
    prices: dict[Capacity, float]
    source: str


# ---------------------------------------------------------------------------------------------
# HTTP (Azure, GCP): the standard library is enough for two GETs, and keeps --help fast.


def _get_json(url: str, timeout_s: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        return json.load(response)


# ---------------------------------------------------------------------------------------------
# AWS


def _aws_client(service: str, region: str, endpoint: str | None, timeout_s: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1})
    return boto3.client(service, region_name=region, endpoint_url=endpoint, config=config)


def aws_on_demand(region: str, instance_type: str, endpoints: PriceEndpoints) -> float:
    client = _aws_client("pricing", AWS_PRICING_REGION, endpoints.aws_pricing, endpoints.timeout_s)
    filters = {"instanceType": instance_type, "regionCode": region, **_AWS_LINUX_FILTERS}
    response = client.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        MaxResults=10,
    )
    prices = []
    # Each PriceList entry is a JSON document in a string: terms.OnDemand.*.priceDimensions.*.
    for document in response.get("PriceList", []):
        product = json.loads(document)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                if dimension.get("unit") == "Hrs":
                    usd = float(dimension["pricePerUnit"]["USD"])
                    if usd > 0:
                        prices.append(usd)
    if not prices:
        raise LivePriceError(f"the Price List API has no Linux on-demand price for {instance_type}")
    return min(prices)


def aws_spot(region: str, instance_type: str, endpoints: PriceEndpoints) -> float:
    client = _aws_client("ec2", region, endpoints.aws_ec2, endpoints.timeout_s)
    response = client.describe_spot_price_history(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.now(UTC),
        MaxResults=100,
    )
    latest: dict[str, tuple[datetime, float]] = {}
    for item in response.get("SpotPriceHistory", []):
        if item.get("InstanceType") != instance_type:
            continue
        zone, stamp, price = item["AvailabilityZone"], item["Timestamp"], float(item["SpotPrice"])
        if zone not in latest or stamp > latest[zone][0]:
            latest[zone] = (stamp, price)
    if not latest:
        raise LivePriceError(f"no spot price history for {instance_type} in {region}")
    # A node group spreads over the zones, so the zones' mean is the expected price.
    return statistics.fmean(price for _, price in latest.values())


def fetch_aws(region: str, names: list[str], endpoints: PriceEndpoints) -> list[LiveQuote]:
    source = "live: AWS Price List API GetProducts + EC2 DescribeSpotPriceHistory"
    return [
        LiveQuote(
            CloudName.AWS,
            region,
            name,
            "instances",
            {
                Capacity.ON_DEMAND: aws_on_demand(region, name, endpoints),
                Capacity.SPOT: aws_spot(region, name, endpoints),
            },
            source,
        )
        for name in names
    ]


# ---------------------------------------------------------------------------------------------
# Azure


def azure_items(region: str, sku: str, endpoints: PriceEndpoints) -> list[dict[str, Any]]:
    odata = (
        f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' "
        f"and armSkuName eq '{sku}' and priceType eq 'Consumption'"
    )
    url: str | None = endpoints.azure_retail + "?" + urllib.parse.urlencode({"$filter": odata})
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if not url:
            break
        page = _get_json(url, endpoints.timeout_s)
        items.extend(page.get("Items", []))
        url = page.get("NextPageLink")
    return items


def azure_prices(region: str, sku: str, endpoints: PriceEndpoints) -> dict[Capacity, float]:
    prices: dict[Capacity, float] = {}
    for item in azure_items(region, sku, endpoints):
        if item.get("armSkuName") != sku or item.get("type", "Consumption") != "Consumption":
            continue
        sku_name = str(item.get("skuName", ""))
        if "Windows" in str(item.get("productName", "")) or "Low Priority" in sku_name:
            continue
        capacity = Capacity.SPOT if sku_name.endswith("Spot") else Capacity.ON_DEMAND
        prices[capacity] = float(item["retailPrice"])
    if Capacity.ON_DEMAND not in prices:
        raise LivePriceError(f"the Retail Prices API has no Linux price for {sku} in {region}")
    return prices


def fetch_azure(region: str, names: list[str], endpoints: PriceEndpoints) -> list[LiveQuote]:
    source = f"live: Azure Retail Prices API {endpoints.azure_retail}"
    return [
        LiveQuote(
            CloudName.AZURE, region, n, "instances", azure_prices(region, n, endpoints), source
        )
        for n in names
    ]


# ---------------------------------------------------------------------------------------------
# GCP


def gcp_skus(endpoints: PriceEndpoints) -> list[dict[str, Any]]:
    if not endpoints.gcp_api_key:
        raise LivePriceError(
            "the Cloud Billing Catalog API needs an API key: set LLMCTL_GCP_API_KEY"
        )
    base = f"{endpoints.gcp_billing.rstrip('/')}/v1/services/{GCP_COMPUTE_SERVICE_ID}/skus"
    skus: list[dict[str, Any]] = []
    token = ""
    for _ in range(MAX_PAGES):
        query = {"key": endpoints.gcp_api_key, "currencyCode": "USD"}
        if token:
            query["pageToken"] = token
        page = _get_json(base + "?" + urllib.parse.urlencode(query), endpoints.timeout_s)
        skus.extend(page.get("skus", []))
        token = page.get("nextPageToken", "")
        if not token:
            break
    return skus


def gcp_unit_price(sku: dict[str, Any]) -> float:
    """The hourly USD price of a SKU: the last tier's unitPrice {units, nanos}."""
    rates = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
    money = rates[-1]["unitPrice"]
    return int(money.get("units", 0) or 0) + int(money.get("nanos", 0) or 0) / 1e9


def _gcp_capacity(sku: dict[str, Any]) -> Capacity | None:
    usage = sku.get("category", {}).get("usageType")
    return {"OnDemand": Capacity.ON_DEMAND, "Preemptible": Capacity.SPOT}.get(usage)


def _gcp_find(skus: list[dict[str, Any]], region: str, wanted: str, capacity: Capacity) -> float:
    for sku in skus:
        description = sku.get("description", "")
        if (
            region in sku.get("serviceRegions", [])
            and _gcp_capacity(sku) is capacity
            and wanted in description
            and not any(w in description for w in ("Custom", "Sole Tenancy", "Commitment"))
        ):
            return gcp_unit_price(sku)
    raise LivePriceError(f"no {capacity.value} SKU matching {wanted!r} in {region}")


def gcp_machine_price(
    skus: list[dict[str, Any]], region: str, machine: str, capacity: Capacity
) -> float:
    info = catalog.INSTANCE_TYPES[CloudName.GCP][machine]
    family = machine.split("-")[0].upper()
    core_names = (f"{family} Predefined Instance Core", f"{family} Instance Core")
    ram_names = (f"{family} Predefined Instance Ram", f"{family} Instance Ram")
    core = _gcp_first(skus, region, core_names, capacity)
    ram = _gcp_first(skus, region, ram_names, capacity)
    return info.vcpus * core + info.memory_gib * ram


def _gcp_first(
    skus: list[dict[str, Any]], region: str, names: tuple[str, ...], capacity: Capacity
) -> float:
    errors = []
    for name in names:
        try:
            return _gcp_find(skus, region, name, capacity)
        except LivePriceError as exc:
            errors.append(str(exc))
    raise LivePriceError("; ".join(errors))


def fetch_gcp(
    region: str, machines: list[str], accelerators: list[str], endpoints: PriceEndpoints
) -> list[LiveQuote]:
    skus = gcp_skus(endpoints)
    source = f"live: Cloud Billing Catalog API services/{GCP_COMPUTE_SERVICE_ID}/skus"
    quotes = [
        LiveQuote(
            CloudName.GCP,
            region,
            m,
            "instances",
            {c: gcp_machine_price(skus, region, m, c) for c in Capacity},
            source,
        )
        for m in machines
    ]
    for label in accelerators:
        if label not in GCP_GPU_SKU_NAMES:
            raise LivePriceError(f"llmctl does not know the SKU name of accelerator {label!r}")
        name = GCP_GPU_SKU_NAMES[label]
        quotes.append(
            LiveQuote(
                CloudName.GCP,
                region,
                label,
                "accelerators",
                {c: _gcp_find(skus, region, name, c) for c in Capacity},
                source,
            )
        )
    return quotes


# ---------------------------------------------------------------------------------------------
# Putting quotes into a catalog.


@dataclass(frozen=True)
class PricedItems:
    """What to fetch in one cloud."""

    cloud: CloudName
    region: str
    instances: tuple[str, ...]
    accelerators: tuple[str, ...] = ()


def _fetch(items: PricedItems, endpoints: PriceEndpoints) -> list[LiveQuote]:
    names = list(items.instances)
    if items.cloud is CloudName.AWS:
        return fetch_aws(items.region, names, endpoints)
    if items.cloud is CloudName.AZURE:
        return fetch_azure(items.region, names, endpoints)
    return fetch_gcp(items.region, names, list(items.accelerators), endpoints)


def apply_quotes(prices: PriceCatalog, quotes: list[LiveQuote], today: str) -> PriceCatalog:
    data = prices.model_dump(mode="json")
    for quote in quotes:
        region = data["clouds"][quote.cloud.value]["regions"][quote.region]
        entry = region.setdefault(quote.kind, {}).setdefault(quote.item, {})
        for capacity, usd in quote.prices.items():
            key = "on_demand" if capacity is Capacity.ON_DEMAND else "spot"
            entry[key] = {
                "usd_per_hour": round(usd, 6),
                "source": quote.source,
                "date": today,
                "note": "fetched with --live",
            }
        if "spot" in entry and entry.get("spot") is not None:
            entry["spot_unavailable"] = None
    return PriceCatalog.model_validate(data)


def refresh(
    prices: PriceCatalog,
    wanted: list[PricedItems],
    endpoints: PriceEndpoints,
    today: str | None = None,
) -> tuple[PriceCatalog, list[str]]:
    """The catalog with live prices where an API answered, and a warning for each that didn't."""
    today = today or datetime.now(UTC).date().isoformat()
    quotes: list[LiveQuote] = []
    warnings: list[str] = []
    for items in wanted:
        try:
            quotes.extend(_fetch(items, endpoints))
        except Exception as exc:  # noqa: BLE001 - any failure of one API means: use the catalog
            reason = f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"
            missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
            extra = extra_for_module(missing)
            if extra is not None:  # the SDK is an extra: say how to add it, as every command does
                reason = f"{missing} is not installed; {install_hint(extra)}"
            warnings.append(
                f"--live: could not refresh {items.cloud.value} prices ({reason}); using the "
                f"catalog's prices checked {prices.checked}"
            )
    return apply_quotes(prices, quotes, today), warnings
