"""GPU quota: what a pool of `--max-nodes` GPU nodes draws on, read before anything changes.

A new cloud account has no spot GPU quota (AWS "All G and VT Spot Instance Requests", GCP
GPUS_ALL_REGIONS, Azure "Total Regional Spot vCPUs"). A pool that starts at zero nodes is created
anyway; the failure shows only when the first GPU pod waits for a node. So `llmctl gpu enable`
reads each quota the pool needs first (each cloud's adapter knows which, `Cloud.read_quotas`) and
stops while one is below what the pool's maximum needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Quota:
    """One quota the pool draws on: its limit, what is in use (None where the API does not say)
    and what `--max-nodes` GPU nodes need, in the quota's own unit; how to raise it."""

    name: str
    limit: float
    usage: float | None
    needed: float
    unit: str
    raise_how: str

    @property
    def free(self) -> float:
        return self.limit - (self.usage or 0)

    @property
    def short(self) -> bool:
        """The limit itself is below what the pool may grow to: it can never reach its size."""
        return self.limit < self.needed

    @property
    def tight(self) -> bool:
        """Other VMs use so much of it that the pool cannot grow to its size now (a warning:
        usage changes, and on GCP/Azure it counts this pool's own running nodes too)."""
        return not self.short and self.free < self.needed

    def describe(self) -> str:
        used = "" if self.usage is None else f", {_number(self.usage)} in use"
        return (
            f"{self.name}: limit {_number(self.limit)} {self.unit}{used}; "
            f"{_number(self.needed)} needed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "quota": self.name,
            "limit": self.limit,
            "usage": self.usage,
            "needed": self.needed,
            "unit": self.unit,
            "enough": not self.short,
            "enoughNow": not (self.short or self.tight),
            "raise": self.raise_how,
        }


@dataclass(frozen=True)
class QuotaReport:
    """The quotas read, or why they could not be (missing permission, an API llmctl cannot
    reach): an unread quota is a warning, never a refusal."""

    quotas: tuple[Quota, ...] = ()
    unread: str | None = None

    @property
    def short(self) -> tuple[Quota, ...]:
        return tuple(q for q in self.quotas if q.short)

    def as_dict(self) -> dict[str, Any]:
        return {"quotas": [q.as_dict() for q in self.quotas], "unread": self.unread}


def shortfall_message(short: tuple[Quota, ...]) -> str:
    """The reason, one line per quota, with how to raise each."""
    return "; ".join(f"{q.describe()} (raise it: {q.raise_how})" for q in short)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
