"""`--live` against local stand-ins that answer with the providers' real response shapes.

The AWS stand-in speaks the Price List API's JSON 1.1 protocol (GetProducts, whose PriceList is a
list of JSON documents in strings) and EC2's query protocol (DescribeSpotPriceHistory, XML).
The Azure stand-in answers the Retail Prices API (`Items`, `NextPageLink`), the GCP one the Cloud
Billing Catalog API (`skus`, `pricingInfo[].pricingExpression.tieredRates[].unitPrice`, paged
with `nextPageToken`). The real clients (boto3, urllib) talk to them over 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from typer.testing import CliRunner

from llmctl.catalog import CloudName
from llmctl.cli.main import app
from llmctl.cost.live import PricedItems, PriceEndpoints, refresh
from llmctl.cost.prices import Capacity, load_catalog
from tests.support.http_fake import serve_handler

AWS_ON_DEMAND = {"g4dn.xlarge": "0.5260000000", "t3.small": "0.0208000000"}
AWS_SPOT = {  # two zones: the estimate takes the latest price per zone, then their mean
    "g4dn.xlarge": [
        ("us-east-1a", "0.201000", "2026-11-27T09:00:00.000Z"),
        ("us-east-1a", "0.240000", "2026-11-27T10:00:00.000Z"),
        ("us-east-1b", "0.220000", "2026-11-27T10:00:00.000Z"),
    ],
    "t3.small": [("us-east-1a", "0.006200", "2026-11-27T10:00:00.000Z")],
}


def _aws_product(instance_type: str) -> str:
    sku = "SKU" + instance_type.replace(".", "")
    term = f"{sku}.JRTCKXETXF"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": "us-east-1",
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    term: {
                        "priceDimensions": {
                            f"{term}.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "beginRange": "0",
                                "appliesTo": [],
                                "description": f"On Demand Linux {instance_type} Instance Hour",
                                "rateCode": f"{term}.6YS6EN2CT7",
                                "pricePerUnit": {"USD": AWS_ON_DEMAND[instance_type]},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def _spot_xml(instance_type: str) -> str:
    items = "".join(
        f"<item><instanceType>{instance_type}</instanceType>"
        f"<productDescription>Linux/UNIX</productDescription><spotPrice>{price}</spotPrice>"
        f"<timestamp>{stamp}</timestamp><availabilityZone>{zone}</availabilityZone></item>"
        for zone, price, stamp in AWS_SPOT[instance_type]
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>"
        f"<spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken/>"
        "</DescribeSpotPriceHistoryResponse>"
    )


def _azure_item(sku: str, sku_name: str, price: float, product: str) -> dict[str, Any]:
    return {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": "eastus",
        "location": "US East",
        "effectiveStartDate": "2026-01-01T00:00:00Z",
        "meterId": "m-" + sku_name,
        "meterName": sku_name,
        "productId": "DZH318Z0BQPS",
        "skuId": "DZH318Z0BQPS/00TG",
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": "Consumption",
        "isPrimaryMeterRegion": True,
        "armSkuName": sku,
    }


AZURE_PAGES: dict[str, list[list[dict[str, Any]]]] = {
    "Standard_NC4as_T4_v3": [
        [
            _azure_item("Standard_NC4as_T4_v3", "NC4as T4 v3", 0.526, "NCasT4_v3 Series"),
            _azure_item("Standard_NC4as_T4_v3", "NC4as T4 v3", 0.71, "NCasT4_v3 Series Windows"),
        ],
        [
            _azure_item("Standard_NC4as_T4_v3", "NC4as T4 v3 Spot", 0.0714, "NCasT4_v3 Series"),
            _azure_item(
                "Standard_NC4as_T4_v3", "NC4as T4 v3 Low Priority", 0.105, "NCasT4_v3 Series"
            ),
        ],
    ],
    "Standard_B2s": [[_azure_item("Standard_B2s", "B2s", 0.0416, "Virtual Machines BS Series")]],
}


def _money(usd: float) -> dict[str, Any]:
    units = int(usd)
    return {"currencyCode": "USD", "units": str(units), "nanos": round((usd - units) * 1e9)}


def _gcp_sku(
    description: str, group: str, usage: str, usd: float, unit: str = "h"
) -> dict[str, Any]:
    return {
        "name": f"services/6F81-5844-456A/skus/{abs(hash(description)) % 10**8:08X}",
        "skuId": f"{abs(hash(description)) % 10**8:08X}",
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": ["us-central1"],
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "usageUnitDescription": "hour",
                    "baseUnit": "s",
                    "baseUnitDescription": "second",
                    "baseUnitConversionFactor": 3600,
                    "displayQuantity": 1,
                    "tieredRates": [{"startUsageAmount": 0, "unitPrice": _money(usd)}],
                },
                "aggregationInfo": {
                    "aggregationLevel": "ACCOUNT",
                    "aggregationInterval": "DAILY",
                    "aggregationCount": 1,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2026-11-27T00:00:00Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "REGIONAL", "regions": ["us-central1"]},
    }


GCP_PAGES = [
    [
        _gcp_sku(
            "N1 Predefined Instance Core running in Americas", "N1Standard", "OnDemand", 0.031611
        ),
        _gcp_sku(
            "N1 Predefined Instance Ram running in Americas",
            "N1Standard",
            "OnDemand",
            0.004237,
            "GiBy.h",
        ),
        _gcp_sku(
            "Spot Preemptible N1 Predefined Instance Core running in Americas",
            "N1Standard",
            "Preemptible",
            0.0066,
        ),
        _gcp_sku(
            "Spot Preemptible N1 Predefined Instance Ram running in Americas",
            "N1Standard",
            "Preemptible",
            0.00088,
            "GiBy.h",
        ),
        _gcp_sku("Commitment v1: Cpu in Americas for 1 Year", "CPU", "Commit1Yr", 0.019915),
        _gcp_sku("N1 Custom Instance Core running in Americas", "N1Standard", "OnDemand", 0.0332),
    ],
    [
        _gcp_sku("E2 Instance Core running in Americas", "CPU", "OnDemand", 0.021811),
        _gcp_sku("E2 Instance Ram running in Americas", "RAM", "OnDemand", 0.002923, "GiBy.h"),
        _gcp_sku(
            "Spot Preemptible E2 Instance Core running in Americas", "CPU", "Preemptible", 0.00654
        ),
        _gcp_sku(
            "Spot Preemptible E2 Instance Ram running in Americas",
            "RAM",
            "Preemptible",
            0.000877,
            "GiBy.h",
        ),
        _gcp_sku("Nvidia Tesla T4 GPU running in Americas", "GPU", "OnDemand", 0.35),
        _gcp_sku(
            "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas",
            "GPU",
            "Preemptible",
            0.0875,
        ),
    ],
]


class PriceApis(BaseHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # AWS
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        target = self.headers.get("X-Amz-Target", "")
        if target == "AWSPriceListService.GetProducts":
            request = json.loads(body)
            filters = {f["Field"]: f["Value"] for f in request["Filters"]}
            self.requests.append(
                f"aws GetProducts {filters['instanceType']} {filters['regionCode']}"
            )
            assert request["ServiceCode"] == "AmazonEC2" and filters["operatingSystem"] == "Linux"
            answer = {
                "FormatVersion": "aws_v1",
                "PriceList": [_aws_product(filters["instanceType"])],
            }
            self._send(200, json.dumps(answer), "application/x-amz-json-1.1")
            return
        form = urllib.parse.parse_qs(body)
        if form.get("Action") == ["DescribeSpotPriceHistory"]:
            instance_type = form["InstanceType.1"][0]
            self.requests.append(f"aws DescribeSpotPriceHistory {instance_type}")
            self._send(200, _spot_xml(instance_type), "text/xml")
            return
        self._send(400, "{}", "application/json")

    def do_GET(self) -> None:  # Azure, GCP
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        host = f"http://127.0.0.1:{self.server.server_address[1]}"
        if url.path == "/api/retail/prices":
            odata = query["$filter"][0]
            sku = odata.split("armSkuName eq '")[1].split("'")[0]
            page = int(query.get("page", ["0"])[0])
            self.requests.append(f"azure {sku} page {page}")
            pages = AZURE_PAGES[sku]
            link = None
            if page + 1 < len(pages):
                link = f"{host}/api/retail/prices?" + urllib.parse.urlencode(
                    {"$filter": odata, "page": page + 1}
                )
            answer = {
                "BillingCurrency": "USD",
                "CustomerEntityId": "Default",
                "CustomerEntityType": "Retail",
                "Items": pages[page],
                "NextPageLink": link,
                "Count": len(pages[page]),
            }
            self._send(200, json.dumps(answer), "application/json")
            return
        if url.path == "/v1/services/6F81-5844-456A/skus":
            if query.get("key") != ["test-key"]:
                self._send(
                    403,
                    json.dumps({"error": {"code": 403, "status": "PERMISSION_DENIED"}}),
                    "application/json",
                )
                return
            page = int(query.get("pageToken", ["0"])[0])
            self.requests.append(f"gcp skus page {page}")
            answer: dict[str, Any] = {"skus": GCP_PAGES[page]}
            answer["nextPageToken"] = str(page + 1) if page + 1 < len(GCP_PAGES) else ""
            self._send(200, json.dumps(answer), "application/json")
            return
        self._send(404, "{}", "application/json")


@pytest.fixture
def apis() -> Iterator[str]:
    PriceApis.requests = []
    with serve_handler(PriceApis) as url:
        yield url


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _endpoints(base: str, key: str | None = "test-key") -> PriceEndpoints:
    return PriceEndpoints(
        aws_pricing=base,
        aws_ec2=base,
        azure_retail=f"{base}/api/retail/prices",
        gcp_billing=base,
        gcp_api_key=key,
        timeout_s=5,
    )


WANTED = [
    PricedItems(CloudName.AWS, "us-east-1", ("t3.small", "g4dn.xlarge")),
    PricedItems(CloudName.AZURE, "eastus", ("Standard_B2s", "Standard_NC4as_T4_v3")),
    PricedItems(
        CloudName.GCP, "us-central1", ("e2-standard-2", "n1-standard-4"), ("nvidia-tesla-t4",)
    ),
]


def test_live_prices_replace_the_catalog(apis: str, aws_credentials: None) -> None:
    prices, warnings = refresh(load_catalog(), WANTED, _endpoints(apis), today="2026-11-27")
    assert warnings == []
    g4dn = prices.instance(CloudName.AWS, "us-east-1", "g4dn.xlarge")
    assert g4dn.on_demand.usd_per_hour == pytest.approx(0.526)
    assert g4dn.spot is not None and g4dn.spot.usd_per_hour == pytest.approx((0.24 + 0.22) / 2)
    assert g4dn.spot.source.startswith("live: AWS") and g4dn.spot.date == "2026-11-27"
    nc4 = prices.instance(CloudName.AZURE, "eastus", "Standard_NC4as_T4_v3")
    assert nc4.of(Capacity.SPOT).usd_per_hour == pytest.approx(
        0.0714
    )  # not Windows, not Low Priority
    assert nc4.of(Capacity.ON_DEMAND).usd_per_hour == pytest.approx(0.526)
    b2s = prices.instance(CloudName.AZURE, "eastus", "Standard_B2s")
    assert b2s.spot is None and b2s.on_demand.source.startswith("live: Azure")
    n1 = prices.instance(CloudName.GCP, "us-central1", "n1-standard-4")
    assert n1.on_demand.usd_per_hour == pytest.approx(4 * 0.031611 + 15 * 0.004237, abs=1e-6)
    assert n1.of(Capacity.SPOT).usd_per_hour == pytest.approx(4 * 0.0066 + 15 * 0.00088, abs=1e-6)
    e2 = prices.instance(CloudName.GCP, "us-central1", "e2-standard-2")
    assert e2.on_demand.usd_per_hour == pytest.approx(0.067006, abs=1e-6)
    t4 = prices.accelerator(CloudName.GCP, "us-central1", "nvidia-tesla-t4")
    assert t4.of(Capacity.SPOT).usd_per_hour == pytest.approx(0.0875)
    assert "azure Standard_NC4as_T4_v3 page 1" in PriceApis.requests  # followed NextPageLink
    assert "gcp skus page 1" in PriceApis.requests  # followed nextPageToken
    assert "aws DescribeSpotPriceHistory g4dn.xlarge" in PriceApis.requests


def test_cli_live_uses_the_apis(
    apis: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    env = {
        "LLMCTL_AWS_PRICING_ENDPOINT": apis,
        "LLMCTL_AWS_EC2_ENDPOINT": apis,
        "LLMCTL_AZURE_PRICES_URL": f"{apis}/api/retail/prices",
        "LLMCTL_GCP_BILLING_URL": apis,
        "LLMCTL_GCP_API_KEY": "test-key",
    }
    result = CliRunner().invoke(
        app, ["cost", "estimate", "--live", "--mode", "gpu", "-o", "json"], env=env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert not any("--live" in w for w in data["warnings"])
    sources = {(p["cloud"], p["item"]): p["source"] for p in data["prices"]}
    assert sources[("aws", "g4dn.xlarge")].startswith("live: AWS")
    assert sources[("gcp", "nvidia-tesla-t4 x1")].startswith("live: Cloud Billing")
    gcp = next(r for r in data["rows"] if r["cloud"] == "gcp")
    # two e2-standard-2 CPU nodes (2 vCPU, 8 GB each) + n1-standard-4 (4 vCPU, 15 GB) + a T4
    expected = (2 * (2 * 0.00654 + 8 * 0.000877) + 4 * 0.0066 + 15 * 0.00088 + 0.0875) * 730
    assert gcp["computeUsd"] == pytest.approx(expected, rel=1e-4)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_falls_back_to_the_catalog_with_a_warning(aws_credentials: None) -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    catalog = load_catalog()
    prices, warnings = refresh(catalog, WANTED, _endpoints(base), today="2026-11-27")
    assert len(warnings) == 3
    for cloud, warning in zip(("aws", "azure", "gcp"), warnings, strict=True):
        assert warning.startswith(f"--live: could not refresh {cloud} prices")
        assert f"using the catalog's prices checked {catalog.checked}" in warning
    assert prices == catalog


def test_gcp_without_a_key_says_which_variable_to_set(apis: str) -> None:
    _, warnings = refresh(load_catalog(), WANTED[2:], _endpoints(apis, key=None))
    assert len(warnings) == 1 and "LLMCTL_GCP_API_KEY" in warnings[0]


def test_cli_offline_warns_and_still_estimates(
    monkeypatch: pytest.MonkeyPatch, tmp_path, aws_credentials: None
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    base = f"http://127.0.0.1:{_closed_port()}"
    env = {
        "LLMCTL_AWS_PRICING_ENDPOINT": base,
        "LLMCTL_AWS_EC2_ENDPOINT": base,
        "LLMCTL_AZURE_PRICES_URL": base,
        "LLMCTL_GCP_BILLING_URL": base,
        "LLMCTL_GCP_API_KEY": "k",
        "LLMCTL_PRICES_TIMEOUT": "2",
    }
    result = CliRunner().invoke(app, ["cost", "estimate", "--live", "--cloud", "azure"], env=env)
    assert result.exit_code == 0, result.output
    assert "could not refresh azure prices" in result.stderr
    assert "GPU 24/7" in result.stdout
