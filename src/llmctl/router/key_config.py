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

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The key policies and their store are the Stack's too (`router.apiKeys` in llmctl.yaml), so
# they are defined once in config/router_settings.py, which the router may import.
from llmctl.config.router_settings import KEY_NAME_PATTERN as KEY_NAME_PATTERN
from llmctl.config.router_settings import BudgetStore as BudgetStore
from llmctl.config.router_settings import KeyPolicy as KeyPolicy
from llmctl.config.router_settings import OverBudget as OverBudget
from llmctl.config.router_settings import check_key_policies


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ApiKeys(_Strict):
    """Bearer keys: one entry a line in a file, and/or comma-separated in an env var."""

    file: str | None = None
    env: str | None = None
    keys: tuple[KeyPolicy, ...] = ()
    budget_store: BudgetStore | None = Field(None, alias="budgetStore")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_key_policies(
            self.keys,
            self.budget_store,
            has_secrets=bool(self.file or self.env),
            secrets_setting="apiKeys.file or apiKeys.env",
            budget_setting="apiKeys.budgetStore",
        )
        return self
