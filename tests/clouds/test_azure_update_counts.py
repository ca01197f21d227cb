"""The AKS update's `count` by hand: kept inside the new range, moved to its nearest bound.

The quality review (2026-12-06, B4b and B4c) found both clamps removable with every test still
green. Real AKS refuses a PUT whose count lies outside [minCount, maxCount] while autoscaling
("The value of parameter agentPoolProfile.count is invalid"), so each bound matters.
"""

from __future__ import annotations

import pytest

from llmctl.clouds.azure import AzureCloud, updated_agent_pool
from llmctl.clouds.base import PoolOptions
from llmctl.config import Stack


def _pool(count: int) -> dict[str, object]:
    return {"properties": {"count": count, "minCount": 0, "maxCount": 2}}


@pytest.mark.parametrize(
    ("min_nodes", "max_nodes", "count", "expected"),
    [
        (0, 3, 2, 2),  # inside the range: where the autoscaler holds it
        (1, 3, 0, 1),  # a new minimum above the count: raised to it
        (3, 5, 2, 3),
        (0, 1, 2, 1),  # a new maximum below the count: lowered to it
        (0, 2, 5, 2),
    ],
)
def test_count_is_clamped_to_the_new_range(
    min_nodes: int, max_nodes: int, count: int, expected: int
) -> None:
    options = PoolOptions(subscription="sub", min_nodes=min_nodes, max_nodes=max_nodes)
    spec = AzureCloud().node_pool_spec(Stack(), options)
    props = updated_agent_pool(spec, _pool(count))["properties"]
    assert (props["count"], props["minCount"], props["maxCount"]) == (
        expected,
        min_nodes,
        max_nodes,
    )
