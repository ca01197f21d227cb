"""The price catalog shipped in the package (`prices.yaml`): its schema, loading and lookups.

Plain data and validation, no network. Lookups that miss raise `ConfigError` (exit 2) naming what
is allowed, so a typo in a region or instance type reads as one clear sentence.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.errors import ConfigError, LlmctlError

PRICES_RESOURCE = "prices.yaml"


class Capacity(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(_Model):
    """What every figure carries: where it was read and when."""

    source: str = Field(min_length=1)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    note: str | None = None


class HourlyPrice(Sourced):
    usd_per_hour: float = Field(ge=0)


class InstancePrices(_Model):
    on_demand: HourlyPrice
    spot: HourlyPrice | None = None
    spot_unavailable: str | None = Field(None, description="why there is no spot price")

    @model_validator(mode="after")
    def _spot_or_reason(self) -> Self:
        if (self.spot is None) == (self.spot_unavailable is None):
            raise ValueError("give exactly one of spot and spot_unavailable")
        return self

    def of(self, capacity: Capacity) -> HourlyPrice:
        """The price for this capacity; on-demand where the cloud sells no spot."""
        if capacity is Capacity.SPOT and self.spot is not None:
            return self.spot
        return self.on_demand


class DiskPrice(Sourced):
    kind: str
    usd_per_gb_month: float = Field(ge=0)


class LocalDiskPrice(DiskPrice):
    """A GPU node's local disk billed beside it (GKE Local SSD): its size and rate."""

    gb: float = Field(gt=0)


class ControlPlanePrice(HourlyPrice):
    free_tier: str | None = None


class RegionPrices(_Model):
    instances: dict[str, InstancePrices]
    accelerators: dict[str, InstancePrices] = {}
    disk: DiskPrice
    # Absent: the GPU node's local disk comes with the VM (EKS instance store, AKS temp disk).
    gpu_local_disk: LocalDiskPrice | None = None


class CloudPrices(_Model):
    control_plane: dict[str, ControlPlanePrice]
    regions: dict[str, RegionPrices]


class Throughput(Sourced):
    gpu: str | None
    model: str
    tokens_per_second: float = Field(gt=0)


class PriceCatalog(_Model):
    version: int
    currency: str
    checked: str
    clouds: dict[CloudName, CloudPrices]
    throughput: list[Throughput]

    @model_validator(mode="after")
    def _names_exist_in_catalog(self) -> Self:
        for cloud, prices in self.clouds.items():
            for region, region_prices in prices.regions.items():
                for name in region_prices.instances:
                    if name not in catalog.INSTANCE_TYPES[cloud]:
                        raise ValueError(
                            f"{cloud.value}/{region}: instance type {name!r} is not in "
                            "llmctl.catalog.INSTANCE_TYPES"
                        )
        return self

    # Lookups ---------------------------------------------------------------------------------

    def cloud(self, cloud: CloudName) -> CloudPrices:
        return self.clouds[cloud]

    def regions(self, cloud: CloudName) -> list[str]:
        return sorted(self.clouds[cloud].regions)

    def region(self, cloud: CloudName, region: str) -> RegionPrices:
        regions = self.clouds[cloud].regions
        if region not in regions:
            raise ConfigError(
                f"no {cloud.value} prices for region {region!r}",
                hint=f"allowed {cloud.value} regions: {', '.join(sorted(regions))}",
            )
        return regions[region]

    def cloud_of_region(self, region: str) -> CloudName:
        for cloud, prices in self.clouds.items():
            if region in prices.regions:
                return cloud
        raise ConfigError(
            f"unknown region {region!r}",
            hint="allowed regions: " + self.allowed_regions(),
        )

    def allowed_regions(self) -> str:
        return "; ".join(f"{c.value}: {', '.join(self.regions(c))}" for c in self.clouds)

    def instance(self, cloud: CloudName, region: str, name: str) -> InstancePrices:
        region_prices = self.region(cloud, region)
        if name not in region_prices.instances:
            raise ConfigError(
                f"no {cloud.value} price for instance type {name!r} in {region}",
                hint="allowed instance types: " + ", ".join(sorted(region_prices.instances)),
            )
        return region_prices.instances[name]

    def accelerator(self, cloud: CloudName, region: str, label: str) -> InstancePrices:
        region_prices = self.region(cloud, region)
        if label not in region_prices.accelerators:
            raise ConfigError(
                f"no {cloud.value} price for accelerator {label!r} in {region}",
                hint="priced accelerators: "
                + (", ".join(sorted(region_prices.accelerators)) or "none"),
            )
        return region_prices.accelerators[label]

    def node_hourly_usd(
        self, cloud: CloudName, region: str, instance_type: str, capacity: Capacity
    ) -> float:
        """What one node of this type costs per hour, GCP's separately billed GPU included."""
        total = self.instance(cloud, region, instance_type).of(capacity).usd_per_hour
        instance = catalog.INSTANCE_TYPES[cloud][instance_type]
        if cloud is CloudName.GCP and instance.gpu is not None:
            label = catalog.GPUS[instance.gpu].label
            accelerator = self.accelerator(cloud, region, label).of(capacity)
            total += accelerator.usd_per_hour * instance.gpu_count
        return total

    def throughput_for(self, gpu: str | None, model: str) -> Throughput:
        for entry in self.throughput:
            if entry.gpu == gpu and entry.model == model:
                return entry
        known = ", ".join(f"{t.gpu or 'cpu'}/{t.model}" for t in self.throughput)
        raise ConfigError(
            f"no throughput figure for model {model!r} on {gpu or 'CPU'}",
            hint=f"pass --tokens-per-second, or use one of: {known}",
        )


def parse_catalog(text: str, origin: str = PRICES_RESOURCE) -> PriceCatalog:
    try:
        return PriceCatalog.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise LlmctlError(f"the price catalog {origin} is invalid: {exc}") from exc


@cache
def load_catalog() -> PriceCatalog:
    """The catalog shipped in the package, read once."""
    text = resources.files("llmctl.cost").joinpath(PRICES_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text)
