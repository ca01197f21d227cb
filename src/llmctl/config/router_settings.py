"""The router settings a Stack sets and router.yaml carries under the same names: the GPU wait
(`gpuWait`) and the named API keys' policies (`apiKeys.keys`, `apiKeys.budgetStore`).

They are defined once, here, and the router's config (`router/table.py`, `router/key_config.py`)
uses these very classes: `config` is a leaf that cannot import the router, while the router may
import `config` (shared/DESIGN.md). So `llmctl render` accepts exactly what the router loads, and
the two cannot drift; the Helm chart's values schema is held to them by tests/charts. Pure data.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# A key's name is a metrics label and the part of a `name:secret` entry before the first colon:
# no colon in it, and nothing a label value or a log line would mangle.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def refusal(message: str, hint: str) -> PydanticCustomError:
    """A validation error whose hint travels with it (`ctx["hint"]`): the Stack's loader prints
    the message and the hint apart (config/sources.py), the router's loader the message."""
    return PydanticCustomError("llmctl_setting", message, {"hint": hint})


class GiveUp(StrEnum):
    """What a request that stops waiting for a GPU gets (GpuWait)."""

    FALLBACK = "fallback"  # the usual CPU fallback (x-llm-tier: cpu-fallback)
    REJECT = "reject"  # 503 with Retry-After


class GpuWait(_Strict):
    """Waiting for a GPU instead of falling back to CPU (issue 31, router/gpu_wait.py).

    A request asks with the `x-llm-gpu-wait: <seconds>` header; `defaultSeconds` applies when
    it does not (0: fall back at once, as before). The wait is capped at `maxSeconds`; at most
    `maxDepth` requests wait at once. A request past either bound gets `onGiveUp`."""

    default_seconds: float = Field(0.0, alias="defaultSeconds", ge=0)
    max_seconds: float = Field(120.0, alias="maxSeconds", gt=0)
    max_depth: int = Field(64, alias="maxDepth", ge=1)
    on_give_up: GiveUp = Field(GiveUp.FALLBACK, alias="onGiveUp")
    # The Retry-After of the 503 (onGiveUp: reject): about how long a GPU node takes to wake.
    retry_after_seconds: int = Field(30, alias="retryAfterSeconds", ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> Self:
        if self.default_seconds > self.max_seconds:
            raise refusal(
                "gpuWait.defaultSeconds must not be longer than maxSeconds "
                f"({self.default_seconds:g} > {self.max_seconds:g})",
                f"raise gpuWait.maxSeconds to at least {self.default_seconds:g}, or lower "
                "gpuWait.defaultSeconds",
            )
        return self


class OverBudget(StrEnum):
    """What a key's GPU requests get once its GPU tokens for the day are spent."""

    CPU = "cpu"  # served by the CPU tier, as a fallback (x-llm-tier: cpu-fallback)
    REFUSE = "refuse"  # 429 insufficient_quota with Retry-After: the next UTC midnight


class KeyPolicy(_Strict):
    """What one named API key may do (docs/router.md, "Keys, budgets and rate limits")."""

    name: str = Field(pattern=KEY_NAME_PATTERN)
    # The tiers the key may be served by. Without gpu, a GPU request goes to the CPU tier (or,
    # with x-llm-require-tier: gpu, gets 403); without cpu, every request goes to the GPU tier.
    tiers: tuple[str, ...] = ("cpu", "gpu")
    # Prompt plus completion tokens served by a GPU backend per UTC day; None: no budget.
    gpu_tokens_per_day: int | None = Field(None, alias="gpuTokensPerDay", ge=0)
    over_budget: OverBudget = Field(OverBudget.CPU, alias="overBudget")
    # Requests per minute on each router replica (a token bucket of this size); None: no limit.
    requests_per_minute: float | None = Field(None, alias="requestsPerMinute", gt=0)
    # How long this key's GPU requests wait for a waking GPU when they send no x-llm-gpu-wait
    # header (router/gpu_wait.py); None: gpuWait.defaultSeconds. Capped at gpuWait.maxSeconds.
    gpu_wait_seconds: float | None = Field(None, alias="gpuWaitSeconds", ge=0)

    @model_validator(mode="after")
    def _known_tiers(self) -> Self:
        unknown = [t for t in self.tiers if t not in ("cpu", "gpu")]
        if unknown or not self.tiers:
            raise refusal(
                f"key {self.name}: tiers must be a non-empty list of cpu and gpu, "
                f"got {list(self.tiers)}",
                "for example tiers: [cpu] for a key that may never wake a GPU",
            )
        return self


class BudgetStore(_Strict):
    """Prometheus, scraping every router replica, holds the day's GPU token counts
    (docs/router.md, "Keys, budgets and rate limits")."""

    prometheus_url: str = Field(alias="prometheusUrl", pattern=r"^http://[^/\s]+(/\S*)?$")
    # How often each replica reads the day's counts back.
    refresh_seconds: float = Field(5.0, alias="refreshSeconds", gt=0)
    # Label matchers that pick this deployment's routers out of a shared Prometheus,
    # e.g. 'namespace="llm-server"'.
    matchers: str = ""
    timeout_seconds: float = Field(2.0, alias="timeoutSeconds", gt=0)


def check_key_policies(
    keys: Sequence[KeyPolicy],
    budget_store: BudgetStore | None,
    has_secrets: bool,
    secrets_setting: str,
    budget_setting: str,
    budget_hint: str = "set it to the Prometheus that scrapes the routers (KEDA's)",
) -> None:
    """The rules across a key list, for router.yaml's `apiKeys` and the Stack's
    `router.apiKeys` alike: unique names, somewhere for the secrets, a store for the budgets.
    `secrets_setting` and `budget_setting` name the settings the way each file spells them."""
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise refusal(
            f"key names must be unique; repeated: {', '.join(twice)}",
            "give each key its own name: it is the part before the colon of its secret",
        )
    if keys and not has_secrets:
        raise refusal(
            f"named keys need {secrets_setting} for their secrets",
            "its entries are then name:secret, one per named key",
        )
    budgeted = [k.name for k in keys if k.gpu_tokens_per_day is not None]
    if budgeted and budget_store is None:
        raise refusal(
            f"gpuTokensPerDay (keys {', '.join(budgeted)}) needs "
            f"{budget_setting}.prometheusUrl: the day's counts live in Prometheus, so "
            "they hold across router replicas and restarts",
            budget_hint,
        )
