"""What the pure routing tests (test_policy.py, test_federation.py) build their routes from: the
policy, two models and a backend with the attributes the policy reads."""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.router.table import ModelRoute, Policy, Tier

POLICY = Policy(fallbackModel="tinyllama-1.1b-chat")
TINY = ModelRoute(name="tinyllama-1.1b-chat", parameters=1_100_000_000, aliases=("tinyllama",))
BIG = ModelRoute(name="llama-2-7b-chat", parameters=6_740_000_000)


@dataclass
class FakeBackend:
    name: str
    tier: Tier
    model: str
    ready: bool = True
    slots: int = 2
    cost_weight: float = 1.0
    load: int = 0


def cpu(name: str = "aws/cpu", **kw: object) -> FakeBackend:
    return FakeBackend(name, Tier.CPU, TINY.name, **kw)  # type: ignore[arg-type]


def gpu(name: str = "aws/gpu", **kw: object) -> FakeBackend:
    return FakeBackend(name, Tier.GPU, BIG.name, **kw)  # type: ignore[arg-type]
