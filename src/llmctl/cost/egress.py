"""What serving a GPU request from another cloud costs (issue 16): internet egress per 1M
tokens at each cloud's published rate, beside the price of waking the local GPU instead.

Pure: the dated, sourced rates ship in `cost/egress.yaml` next to `cost/prices.yaml`. A
request a peer serves crosses the internet twice: the prompt leaves the forwarding cloud, the
answer leaves the serving cloud. The answer dominates when streamed: llama-server sends one
Server-Sent Event of about 250 bytes per token (the event's JSON repeats id, model, created and
object), with HTTP chunking and TLS records on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmctl.catalog import CloudName
from llmctl.cost.prices import Sourced
from llmctl.errors import LlmctlError

EGRESS_RESOURCE = "egress.yaml"
GIB = 1024**3
GB = 1000**3
# Bytes on the wire per output token (tests/router/test_federation_e2e.py measures the streamed
# figure through a real llama-server and checks it stays within this model's range).
STREAMED_BYTES_PER_TOKEN = 250
PLAIN_BYTES_PER_TOKEN = 8  # a non-streamed answer: the text in one JSON body
PROMPT_BYTES_PER_TOKEN = 5  # the prompt, as JSON text, sent by the forwarding cloud


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EgressPrice(Sourced):
    usd_per_unit: float = Field(ge=0)
    unit: Literal["GB", "GiB"]
    free_gb_per_month: float = Field(ge=0)
    tier: str = Field(min_length=1)

    @property
    def usd_per_byte(self) -> float:
        return self.usd_per_unit / (GIB if self.unit == "GiB" else GB)


class EgressCatalog(_Model):
    version: Literal[1]
    currency: Literal["USD"]
    checked: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    clouds: dict[CloudName, EgressPrice]


@cache
def load_egress() -> EgressCatalog:
    text = resources.files("llmctl.cost").joinpath(EGRESS_RESOURCE).read_text(encoding="utf-8")
    try:
        return EgressCatalog.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # a broken shipped file is a bug, not a user error
        raise LlmctlError(f"the shipped egress catalog is invalid: {exc}") from exc


@dataclass(frozen=True)
class RemoteServing:
    """One cloud as the serving peer: its egress rate, and per 1M output tokens."""

    cloud: str
    usd_per_unit: float
    unit: str
    streamed_usd_per_million_tokens: float
    plain_usd_per_million_tokens: float
    prompt_usd_per_million_tokens: float  # billed by the forwarding cloud, at its own rate
    source: str
    date: str
    note: str | None


def remote_serving(catalog: EgressCatalog, clouds: tuple[CloudName, ...]) -> list[RemoteServing]:
    rows = []
    for cloud in clouds:
        price = catalog.clouds[cloud]
        per_byte = price.usd_per_byte
        rows.append(
            RemoteServing(
                cloud=cloud.value,
                usd_per_unit=price.usd_per_unit,
                unit=price.unit,
                streamed_usd_per_million_tokens=STREAMED_BYTES_PER_TOKEN * 1e6 * per_byte,
                plain_usd_per_million_tokens=PLAIN_BYTES_PER_TOKEN * 1e6 * per_byte,
                prompt_usd_per_million_tokens=PROMPT_BYTES_PER_TOKEN * 1e6 * per_byte,
                source=price.source,
                date=price.date,
                note=price.note,
            )
        )
    return rows


def wake_usd(gpu_hourly: float, cold_start_s: float, idle_timeout_s: float) -> float:
    """One wake of a scaled-to-zero GPU node: billed while it starts and loads the model, then
    at least for the cooldown after its last request."""
    return gpu_hourly * (cold_start_s + idle_timeout_s) / 3600.0


def tokens_per_wake(wake: float, usd_per_million_tokens: float) -> float | None:
    """How many streamed tokens served remotely cost as much egress as one local wake."""
    if usd_per_million_tokens <= 0:
        return None
    return wake / usd_per_million_tokens * 1e6


@dataclass(frozen=True)
class RemoteRow:
    """One cloud, both ways: what its egress costs when it serves another cloud's request, and
    what waking its own GPU once costs (so serving remotely instead can be weighed)."""

    serving: RemoteServing
    wake_usd: float
    # Streamed tokens that, served by the cheapest other cloud, cost as much egress as one wake.
    tokens_per_wake: float | None
    cheapest_other: str | None


def remote_rows(
    catalog: EgressCatalog,
    gpu_hourly: dict[CloudName, float],
    cold_start_s: float,
    idle_timeout_s: float,
) -> list[RemoteRow]:
    """A row per cloud of the estimate (in its order)."""
    clouds = tuple(gpu_hourly)
    serving = {CloudName(r.cloud): r for r in remote_serving(catalog, clouds)}
    rows = []
    for cloud in clouds:
        wake = wake_usd(gpu_hourly[cloud], cold_start_s, idle_timeout_s)
        others = [serving[c] for c in clouds if c != cloud]
        cheapest = min(others, key=lambda r: r.streamed_usd_per_million_tokens, default=None)
        rows.append(
            RemoteRow(
                serving=serving[cloud],
                wake_usd=wake,
                tokens_per_wake=(
                    tokens_per_wake(wake, cheapest.streamed_usd_per_million_tokens)
                    if cheapest is not None
                    else None
                ),
                cheapest_other=cheapest.cloud if cheapest is not None else None,
            )
        )
    return rows
