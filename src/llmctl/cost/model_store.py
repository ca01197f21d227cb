"""What the model cache costs (issue 30): the GPU model kept in each cloud's object store, and
each wake's fetch from it, beside the Hugging Face Hub's free but slower download.

Pure: the dated, sourced prices ship in `cost/storage.yaml`. A wake's fetch is one ranged GET
per range of the pod's fetcher (16 MiB) plus two small ones (the size probe and the `.sha256`);
the bytes cross no region, so the clouds bill no transfer for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmctl.catalog import CloudName
from llmctl.cost.prices import Sourced
from llmctl.errors import LlmctlError

STORAGE_RESOURCE = "storage.yaml"
GB = 1000**3
RANGE_BYTES = 16 * 1024 * 1024  # the pod's fetcher's range size (modelstore/fetch.py)
EXTRA_GETS = 2  # the one-byte probe and the .sha256 object
# The Hub download the docs have used for a wake (docs/deploy.md): 50 MB/s.
HUB_MB_PER_S = 50.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoragePrice(Sourced):
    storage_class: str = Field(min_length=1)
    usd_per_gb_month: float = Field(ge=0)
    usd_per_1000_gets: float = Field(ge=0)
    in_region_transfer_usd_per_gb: float = Field(ge=0)


class StorageCatalog(_Model):
    version: Literal[1]
    currency: Literal["USD"]
    checked: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    clouds: dict[CloudName, StoragePrice]


@cache
def load_storage() -> StorageCatalog:
    text = resources.files("llmctl.cost").joinpath(STORAGE_RESOURCE).read_text(encoding="utf-8")
    try:
        return StorageCatalog.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # a broken shipped file is a bug, not a user error
        raise LlmctlError(f"the shipped storage catalog is invalid: {exc}") from exc


@dataclass(frozen=True)
class StoreRow:
    cloud: str
    storage_class: str
    model_gb: float
    storage_usd_per_month: float
    gets_per_wake: int
    usd_per_wake: float  # GETs plus in-region transfer
    hub_fetch_s: float  # the same file from the Hub at HUB_MB_PER_S
    source: str
    date: str


def gets_per_fetch(model_bytes: int) -> int:
    return math.ceil(model_bytes / RANGE_BYTES) + EXTRA_GETS


def store_rows(
    catalog: StorageCatalog, clouds: tuple[CloudName, ...], model_bytes: int
) -> list[StoreRow]:
    rows = []
    gb = model_bytes / GB
    gets = gets_per_fetch(model_bytes)
    for cloud in clouds:
        price = catalog.clouds[cloud]
        rows.append(
            StoreRow(
                cloud=cloud.value,
                storage_class=price.storage_class,
                model_gb=gb,
                storage_usd_per_month=gb * price.usd_per_gb_month,
                gets_per_wake=gets,
                usd_per_wake=gets * price.usd_per_1000_gets / 1000
                + gb * price.in_region_transfer_usd_per_gb,
                hub_fetch_s=model_bytes / 1e6 / HUB_MB_PER_S,
                source=price.source,
                date=price.date,
            )
        )
    return rows
