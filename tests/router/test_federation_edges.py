"""Edges of federation's routing choice that mutation testing showed no test pinned (issue 20).

`benchmarks/mutation.py --core federation` reruns these against each mutant.
"""

from __future__ import annotations

import pytest

from llmctl.router.federation import PeerView, TierCapacity, parse_capacity, rank_peers
from llmctl.router.table import Tier

MODEL = "llama-2-7b-chat"


def peer(name: str, *capacities: TierCapacity) -> PeerView:
    return PeerView(name=name, ready=True, models=frozenset({MODEL}), tiers={Tier.GPU: capacities})


def test_a_tier_entry_without_slots_does_not_hide_the_next_one() -> None:
    p = peer("gcp", TierCapacity(MODEL, 0, 0), TierCapacity(MODEL, 4, 2))
    (choice,) = rank_peers([p], Tier.GPU, MODEL)
    assert choice.capacity == TierCapacity(MODEL, 4, 2)


def test_free_only_skips_a_full_entry_and_keeps_looking() -> None:
    p = peer("gcp", TierCapacity(MODEL, 2, 0), TierCapacity(MODEL, 2, 1))
    (choice,) = rank_peers([p], Tier.GPU, MODEL, free_only=True)
    assert choice.capacity == TierCapacity(MODEL, 2, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the /readyz body is not a JSON object"),
        ({"status": "draining", "models": {}, "tiers": {}}, "the peer is draining"),
        ({"status": "ok"}, "the /readyz body has no 'models' and 'tiers'"),
        ({"models": [], "tiers": {}}, "the /readyz body has no 'models' and 'tiers'"),
        ({"models": {}, "tiers": {"gpu": {}}}, "/readyz tiers.gpu is not a list"),
        ({"models": {}, "tiers": {"cpu": ["x"]}}, "/readyz tiers.cpu has a non-object entry"),
        (
            {"models": {}, "tiers": {"gpu": [{"model": MODEL, "slots": "2", "free": 1}]}},
            "/readyz tiers.gpu entry {'model': 'llama-2-7b-chat', 'slots': '2', 'free': 1} "
            "is malformed",
        ),
    ],
)
def test_readyz_bodies_that_are_refused_say_why(body: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_capacity(body)
    assert str(error.value) == message
