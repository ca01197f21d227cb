"""The `apiKeys:` section of the router's config (issue 31): where the client keys are, and, for
named keys, what each may do. Pure data.

```yaml
apiKeys:
  env: LLM_ROUTER_API_KEYS        # and/or file: one entry a line
  keys:                           # named keys: every entry of the file/env is `name:secret`
    - {name: team-a, gpuTokensPerDay: 200000, overBudget: cpu, requestsPerMinute: 120}
    - {name: batch, tiers: [cpu]}
  budgetStore:                    # where the replicas share the GPU token counts
    prometheusUrl: http://prometheus-operated.monitoring.svc:9090
```

Without `keys:`, every entry is a plain secret with no policy, as before issue 31.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A key's name is a metrics label and the part of a `name:secret` entry before the first colon:
# no colon in it, and nothing a label value or a log line would mangle.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class OverBudget(StrEnum):
    """What a key's GPU requests get once its GPU tokens for the day are spent."""

    CPU = "cpu"  # served by the CPU tier, as a fallback (x-llm-tier: cpu-fallback)
    REFUSE = "refuse"  # 429 insufficient_quota with Retry-After: the next UTC midnight


class KeyPolicy(_Strict):
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
            raise ValueError(
                f"key {self.name}: tiers must be a non-empty list of cpu and gpu, "
                f"got {list(self.tiers)}"
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


class ApiKeys(_Strict):
    """Bearer keys: one entry a line in a file, and/or comma-separated in an env var."""

    file: str | None = None
    env: str | None = None
    keys: tuple[KeyPolicy, ...] = ()
    budget_store: BudgetStore | None = Field(None, alias="budgetStore")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [k.name for k in self.keys]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"key names must be unique; repeated: {', '.join(twice)}")
        if self.keys and not (self.file or self.env):
            raise ValueError("named keys need apiKeys.file or apiKeys.env for their secrets")
        budgeted = [k.name for k in self.keys if k.gpu_tokens_per_day is not None]
        if budgeted and self.budget_store is None:
            raise ValueError(
                f"gpuTokensPerDay (keys {', '.join(budgeted)}) needs "
                "apiKeys.budgetStore.prometheusUrl: the day's counts live in Prometheus, so "
                "they hold across router replicas and restarts"
            )
        return self
