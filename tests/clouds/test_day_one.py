"""The first day on a new cloud account (issue 26), once per cloud against its stand-in: the GPU
quota read before anything changes, pools llmctl did not make (no GPU, another GPU, no driver,
another owner) refused with each difference, and llmctl's mark on what it creates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmctl.clouds.base import NotOursError, PoolDiffersError
from tests.clouds.harness import HARNESSES, Harness


@pytest.fixture(params=list(HARNESSES), ids=lambda c: c.value)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from HARNESSES[request.param]()


def test_enough_quota_reads_as_enough(harness: Harness) -> None:
    report = harness.cloud.read_quotas(harness.spec())
    assert report.unread is None
    assert report.quotas and not report.short
    assert all(q.needed > 0 for q in report.quotas)


def test_zero_quota_is_named_with_how_to_raise_it(harness: Harness) -> None:
    harness.zero_quota()
    report = harness.cloud.read_quotas(harness.spec())
    assert report.unread is None
    short = {q.name: q for q in report.short}
    assert set(harness.quota_names) <= set(short), short
    assert all(q.limit == 0 for q in short.values())
    assert any(harness.raise_how in q.raise_how for q in short.values())
    assert harness.writes() == 0  # reading a quota changes nothing


def test_max_nodes_sets_what_is_needed(harness: Harness) -> None:
    small = harness.cloud.read_quotas(harness.spec(max_nodes=1))
    large = harness.cloud.read_quotas(harness.spec(max_nodes=80))
    assert not small.short
    assert {q.name for q in large.short}  # 80 GPU nodes exceed the stand-ins' quotas
    assert max(q.needed for q in large.quotas) == 80 * max(q.needed for q in small.quotas)


def test_llmctl_marks_the_pool_it_creates(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    assert harness.marked()
    state = harness.cloud.read_pool(spec)
    assert state is not None and state.owned


def test_a_pool_without_the_mark_is_refused_and_never_unchanged(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    harness.unmark()
    before = harness.writes()
    with pytest.raises(PoolDiffersError) as info:
        harness.cloud.ensure_gpu_pool(spec)
    assert [d.field for d in info.value.differences] == ["owner"]
    assert "--adopt" in (info.value.hint or "")
    assert harness.writes() == before
    assert not harness.marked()


def test_adopt_marks_the_pool_in_place(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    harness.unmark()
    result = harness.cloud.ensure_gpu_pool(spec, adopt=True)
    assert result.action == "updated"
    assert [d.field for d in result.differences] == ["owner"]
    assert harness.marked()
    assert harness.cloud.ensure_gpu_pool(spec).action == "unchanged"


def test_disable_leaves_a_pool_without_the_mark_alone(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    harness.unmark()
    before = harness.writes()
    with pytest.raises(NotOursError, match="did not create it") as info:
        harness.cloud.disable(spec, scale_to_zero=False)
    assert "--force" in (info.value.hint or "")
    assert harness.writes() == before
    assert harness.cloud.read_pool(spec) is not None
    assert harness.cloud.disable(spec, scale_to_zero=False, force=True)
    assert harness.cloud.read_pool(spec) is None


def test_other_gpu_pools_are_found_by_name(harness: Harness) -> None:
    spec = harness.spec()
    harness.cloud.ensure_gpu_pool(spec)
    assert harness.cloud.other_gpu_pools(spec) == []
    assert spec.name in harness.cloud.pool_names(spec)
