"""Federation's pure choice: which peers a request tries before its local route, in which order."""

from __future__ import annotations

import pytest

from llmctl.router import federation, policy
from llmctl.router.federation import PeerChoice, PeerView, TierCapacity
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.table import ModelRoute, Tier
from tests.router.fakes import BIG, POLICY, TINY, FakeBackend
from tests.router.fakes import cpu as local_cpu
from tests.router.fakes import gpu as local_gpu

MODELS = frozenset({TINY.name, BIG.name})


def peer(
    name: str,
    *,
    gpu: tuple[int, int] | None = (4, 4),
    cpu: tuple[int, int] | None = (2, 2),
    ready: bool = True,
    weight: float = 1.0,
    ttfb: float | None = None,
    models: frozenset[str] = MODELS,
    gpu_model: str = BIG.name,
) -> PeerView:
    tiers: dict[Tier, tuple[TierCapacity, ...]] = {}
    if gpu is not None:
        tiers[Tier.GPU] = (TierCapacity(gpu_model, slots=gpu[0], free=gpu[1]),)
    if cpu is not None:
        tiers[Tier.CPU] = (TierCapacity(TINY.name, slots=cpu[0], free=cpu[1]),)
    return PeerView(name, ready, weight, ttfb, models, tiers)


def names(choices: list[PeerChoice]) -> list[str]:
    return [c.peer.name for c in choices]


def route(
    backends: list[FakeBackend], model: ModelRoute = BIG, require_gpu: bool = False
) -> Route | Refusal:
    return policy.plan_route(model, "chat", require_gpu, backends, POLICY)


# --- peer_score ----------------------------------------------------------------------------


def test_score_puts_a_free_slot_first_whatever_the_weight() -> None:
    free = PeerChoice(peer("a", weight=100.0), Tier.GPU, TierCapacity(BIG.name, 4, 1))
    full = PeerChoice(peer("b", weight=0.01), Tier.GPU, TierCapacity(BIG.name, 4, 0))
    assert federation.peer_score(free)[0] == 0
    assert federation.peer_score(full)[0] == 1
    assert federation.peer_score(free) < federation.peer_score(full)


def test_score_is_utilisation_after_the_request_times_weight() -> None:
    choice = PeerChoice(peer("a", weight=0.5, ttfb=0.25), Tier.GPU, TierCapacity(BIG.name, 8, 6))
    # busy 2, plus this request: 3/8, times 0.5
    assert federation.peer_score(choice) == (0, pytest.approx(3 / 8 * 0.5), 0.25)


def test_score_of_an_overcommitted_report_counts_no_negative_free() -> None:
    choice = PeerChoice(peer("a"), Tier.GPU, TierCapacity(BIG.name, 4, -2))
    assert federation.peer_score(choice) == (1, pytest.approx(5 / 4), 0.0)


def test_score_weight_zero_means_fill_first_but_is_not_negative() -> None:
    zero = PeerChoice(peer("a", weight=0.0), Tier.GPU, TierCapacity(BIG.name, 4, 0))
    score = federation.peer_score(zero)
    assert 0 < score[1] < 1e-6


def test_score_of_a_tier_reporting_no_slots_does_not_divide_by_zero() -> None:
    choice = PeerChoice(peer("a"), Tier.GPU, TierCapacity(BIG.name, 0, 0))
    assert federation.peer_score(choice) == (1, 1.0, 0.0)


def test_score_unmeasured_latency_counts_as_zero() -> None:
    choice = PeerChoice(peer("a", ttfb=None), Tier.GPU, TierCapacity(BIG.name, 4, 4))
    assert federation.peer_score(choice)[2] == 0.0


# --- rank_peers ----------------------------------------------------------------------------


# Peers, and the order rank_peers tries them in for the GPU tier and BIG; each case is named for
# the rule it shows.
GPU_RANKS: dict[str, tuple[list[PeerView], str]] = {
    "more free first": ([peer("azure", gpu=(4, 1)), peer("gcp", gpu=(4, 3))], "gcp azure"),
    # Unequal slots rank by utilisation, not by free count. azure: 3 free of 16 (14/16 busy
    # after this one); gcp: 2 free of 2 (1/2 after); and the other way round: 15 free of 16
    # beats 1 free of 2.
    "utilisation": ([peer("azure", gpu=(16, 3)), peer("gcp", gpu=(2, 2))], "gcp azure"),
    "utilisation too": ([peer("gcp", gpu=(2, 1)), peer("azure", gpu=(16, 15))], "azure gcp"),
    # A weight below one makes a busier peer win: gcp 3/4 busy after this request at weight
    # 0.5 = 0.375; azure 1/4 at weight 2 = 0.5. At equal weights the idle one wins.
    "weight": (
        [peer("azure", gpu=(4, 4), weight=2.0), peer("gcp", gpu=(4, 2), weight=0.5)],
        "gcp azure",
    ),
    "equal weights": ([peer("azure", gpu=(4, 4)), peer("gcp", gpu=(4, 2))], "azure gcp"),
    # A full peer comes after any free one, whatever its weight.
    "full last": (
        [peer("azure", gpu=(4, 0), weight=0.1), peer("gcp", gpu=(4, 1), weight=5.0)],
        "gcp azure",
    ),
    # Latency breaks a tie of load and weight, but does not beat load.
    "latency tie": ([peer("azure", ttfb=0.080), peer("gcp", ttfb=0.020)], "gcp azure"),
    "load over latency": (
        [peer("azure", gpu=(4, 1), ttfb=0.001), peer("gcp", gpu=(4, 4), ttfb=5.0)],
        "gcp azure",
    ),
    # Full ties keep the configured order, either way round.
    "full tie": ([peer("gcp", ttfb=0.05), peer("azure", ttfb=0.05)], "gcp azure"),
    "full tie reversed": ([peer("azure", ttfb=0.05), peer("gcp", ttfb=0.05)], "azure gcp"),
    # An unmeasured peer is tried before a slow one.
    "unmeasured": ([peer("azure", ttfb=0.3), peer("gcp", ttfb=None)], "gcp azure"),
    # Left out: peers not ready, a tier with no slots, a peer that does not know the model.
    "not ready": ([peer("azure", ready=False), peer("gcp")], "gcp"),
    "no slots": ([peer("azure", gpu=(0, 0)), peer("gcp", gpu=(1, 1))], "gcp"),
    "unknown model": ([peer("azure", models=frozenset({TINY.name})), peer("gcp")], "gcp"),
}


@pytest.mark.parametrize("case", list(GPU_RANKS))
def test_rank_gpu_peers(case: str) -> None:
    peers, order = GPU_RANKS[case]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name)) == order.split()


def test_rank_all_not_ready_is_empty() -> None:
    peers = [peer("azure", ready=False), peer("gcp", ready=False)]
    assert federation.rank_peers(peers, Tier.GPU, BIG.name) == []


def test_rank_leaves_out_a_peer_without_the_tier() -> None:
    peers = [peer("azure", gpu=None), peer("gcp")]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name)) == ["gcp"]
    assert names(federation.rank_peers(peers, Tier.CPU, TINY.name)) == ["azure", "gcp"]


def test_rank_free_only_drops_full_peers() -> None:
    peers = [peer("azure", gpu=(4, 0)), peer("gcp", gpu=(4, 1))]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name, free_only=True)) == ["gcp"]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name)) == ["gcp", "azure"]


def test_rank_free_only_keeps_a_peer_with_exactly_one_free_slot() -> None:
    peers = [peer("gcp", gpu=(4, 1))]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name, free_only=True)) == ["gcp"]


def test_rank_excludes_tried_peers() -> None:
    peers = [peer("azure"), peer("gcp")]
    assert names(federation.rank_peers(peers, Tier.GPU, BIG.name, exclude=["azure"])) == ["gcp"]


def test_rank_prefers_a_tier_serving_the_exact_model() -> None:
    # Asked for tinyllama on the GPU tier (complexity reasoning): a peer whose GPU serves
    # tinyllama wins over a less loaded one serving another model.
    peers = [peer("azure", gpu=(4, 4)), peer("gcp", gpu=(4, 1), gpu_model=TINY.name)]
    assert names(federation.rank_peers(peers, Tier.GPU, TINY.name)) == ["gcp"]


def test_rank_the_tiers_own_model_answers_when_none_serves_the_exact_one() -> None:
    peers = [peer("azure", gpu=(4, 2)), peer("gcp", gpu=(4, 4))]
    ranked = federation.rank_peers(peers, Tier.GPU, TINY.name)
    assert names(ranked) == ["gcp", "azure"]
    assert ranked[0].capacity.model == BIG.name
    assert ranked[0].tier == Tier.GPU


def test_rank_keeps_one_choice_per_peer_its_best() -> None:
    two = PeerView(
        "gcp",
        True,
        models=MODELS,
        tiers={
            Tier.GPU: (TierCapacity(BIG.name, 4, 0), TierCapacity(BIG.name, 4, 3)),
        },
    )
    ranked = federation.rank_peers([two, peer("azure", gpu=(4, 2))], Tier.GPU, BIG.name)
    assert names(ranked) == ["gcp", "azure"]
    assert ranked[0].capacity.free == 3


def test_rank_keeps_first_of_two_equal_capacities_of_one_peer() -> None:
    first, second = TierCapacity(BIG.name, 4, 2), TierCapacity(BIG.name, 4, 2)
    two = PeerView("gcp", True, models=MODELS, tiers={Tier.GPU: (first, second)})
    assert federation.rank_peers([two], Tier.GPU, BIG.name)[0].capacity is first


# --- peer_choices: the order around the local route -----------------------------------------


def test_local_gpu_with_a_free_slot_tries_no_peer() -> None:
    local = route([local_cpu(), local_gpu(load=1)])
    assert isinstance(local, Route) and local.served == Served.GPU
    assert federation.peer_choices(local, BIG.name, [peer("gcp")], hop=False) == []


def test_local_gpu_ready_but_full_tries_only_peers_with_a_free_slot() -> None:
    local = route([local_cpu(), local_gpu(load=2)])
    peers = [peer("azure", gpu=(4, 0)), peer("gcp", gpu=(4, 1))]
    assert names(federation.peer_choices(local, BIG.name, peers, hop=False)) == ["gcp"]


def test_local_gpu_full_and_every_peer_full_waits_at_home() -> None:
    local = route([local_cpu(), local_gpu(load=5)])
    peers = [peer("azure", gpu=(4, 0)), peer("gcp", gpu=(4, 0))]
    assert federation.peer_choices(local, BIG.name, peers, hop=False) == []


def test_local_gpu_down_tries_every_ready_peer_before_the_cpu_fallback() -> None:
    local = route([local_cpu(), local_gpu(ready=False)])
    assert isinstance(local, Route) and local.served == Served.CPU_FALLBACK
    peers = [peer("azure", gpu=(4, 0)), peer("gcp", gpu=(4, 2)), peer("x", ready=False)]
    assert names(federation.peer_choices(local, BIG.name, peers, hop=False)) == ["gcp", "azure"]


def test_no_local_gpu_at_all_tries_peers() -> None:
    local = route([local_cpu()])
    assert names(federation.peer_choices(local, BIG.name, [peer("gcp")], hop=False)) == ["gcp"]


def test_required_gpu_refused_locally_is_served_by_a_peer() -> None:
    local = route([local_cpu(), local_gpu(ready=False)], require_gpu=True)
    assert isinstance(local, Refusal)
    assert names(federation.peer_choices(local, BIG.name, [peer("gcp")], hop=False)) == ["gcp"]


def test_all_peers_not_ready_leaves_the_local_fallback() -> None:
    local = route([local_cpu(), local_gpu(ready=False)])
    peers = [peer("azure", ready=False), peer("gcp", ready=False)]
    assert federation.peer_choices(local, BIG.name, peers, hop=False) == []


def test_no_peers_configured() -> None:
    local = route([local_cpu(), local_gpu(ready=False)])
    assert federation.peer_choices(local, BIG.name, [], hop=False) == []


def test_a_request_from_a_peer_is_never_forwarded() -> None:
    for backends in ([local_cpu(), local_gpu(ready=False)], [local_cpu(ready=False)], []):
        local = route(backends)  # type: ignore[arg-type]
        assert federation.peer_choices(local, BIG.name, [peer("gcp")], hop=True) == []


def test_cpu_request_stays_local_while_a_local_cpu_is_ready_even_full() -> None:
    peers = [peer("gcp", cpu=(4, 4))]
    for load in (0, 1, 2, 7):
        local = route([local_cpu(load=load)], model=TINY)
        assert isinstance(local, Route) and local.served == Served.CPU
        assert federation.peer_choices(local, TINY.name, peers, hop=False) == []


def test_cpu_request_without_a_ready_local_cpu_tries_peer_cpus() -> None:
    local = route([local_cpu(ready=False), local_gpu()], model=TINY)
    assert isinstance(local, Route) and local.served == Served.GPU  # today's local answer
    peers = [peer("azure", cpu=(2, 0)), peer("gcp", cpu=(2, 1))]
    choices = federation.peer_choices(local, TINY.name, peers, hop=False)
    assert names(choices) == ["gcp", "azure"]
    assert all(c.tier == Tier.CPU for c in choices)


def test_cpu_request_refused_locally_tries_peer_cpus() -> None:
    local = route([local_cpu(ready=False)], model=TINY)
    assert isinstance(local, Refusal)
    assert names(federation.peer_choices(local, TINY.name, [peer("gcp")], hop=False)) == ["gcp"]


def test_gpu_request_never_takes_a_peer_cpu() -> None:
    local = route([local_cpu(), local_gpu(ready=False)])
    peers = [peer("gcp", gpu=None, cpu=(8, 8))]
    assert federation.peer_choices(local, BIG.name, peers, hop=False) == []


def test_headers_are_lowercase_names() -> None:
    assert federation.HOP_HEADER == "x-llm-hop"
    assert federation.PEER_HEADER == "x-llm-peer"


# --- /readyz capacity, written and read back ------------------------------------------------


def test_local_capacity_sums_ready_backends_per_tier_and_model() -> None:
    backends = [
        FakeBackend("aws/cpu", Tier.CPU, TINY.name, slots=2, load=1),
        FakeBackend("gcp/cpu", Tier.CPU, TINY.name, slots=4, load=0),
        FakeBackend("aws/gpu", Tier.GPU, BIG.name, slots=8, load=3),
        FakeBackend("azure/gpu", Tier.GPU, BIG.name, slots=8, ready=False),
        FakeBackend("big/cpu", Tier.CPU, BIG.name, slots=1, load=5),  # overloaded: 0 free
    ]
    assert federation.local_capacity(backends) == {
        "cpu": [
            {"model": TINY.name, "slots": 6, "free": 5},
            {"model": BIG.name, "slots": 1, "free": 0},
        ],
        "gpu": [{"model": BIG.name, "slots": 8, "free": 5}],
    }


def test_local_capacity_leaves_out_tiers_with_nothing_ready() -> None:
    assert federation.local_capacity([local_gpu(ready=False)]) == {}


def test_parse_capacity_reads_what_local_capacity_writes() -> None:
    body = {
        "status": "ready",
        "models": {TINY.name: "ready", BIG.name: "fallback"},
        "tiers": federation.local_capacity([local_cpu(load=1), local_gpu()]),
    }
    models, tiers = federation.parse_capacity(body)
    assert models == MODELS
    assert tiers == {
        Tier.CPU: (TierCapacity(TINY.name, 2, 1),),
        Tier.GPU: (TierCapacity(BIG.name, 2, 2),),
    }


def test_parse_capacity_ignores_unknown_tiers() -> None:
    body = {"models": {}, "tiers": {"tpu": [{"model": "x", "slots": 1, "free": 1}]}}
    assert federation.parse_capacity(body) == (frozenset(), {})


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"status": "ready"},  # a router from before federation: no tiers
        {"models": {}, "tiers": []},
        {"models": [], "tiers": {}},
        {"models": {}, "tiers": {"gpu": {}}},
        {"models": {}, "tiers": {"gpu": ["x"]}},
        {"models": {}, "tiers": {"gpu": [{"model": 1, "slots": 1, "free": 1}]}},
        {"models": {}, "tiers": {"gpu": [{"model": "m", "slots": "1", "free": 1}]}},
        {"models": {}, "tiers": {"gpu": [{"model": "m", "slots": 1, "free": 1.5}]}},
        {"models": {}, "tiers": {"cpu": [{"model": "m", "slots": True, "free": 1}]}},
    ],
)
def test_parse_capacity_refuses_malformed_bodies(body: object) -> None:
    with pytest.raises(ValueError):
        federation.parse_capacity(body)


def test_parse_capacity_refuses_a_draining_peer() -> None:
    body = {
        "status": "draining",
        "models": {BIG.name: "ready"},
        "tiers": {"gpu": [{"model": BIG.name, "slots": 2, "free": 2}]},
    }
    with pytest.raises(ValueError, match="draining"):
        federation.parse_capacity(body)
    assert federation.parse_capacity(body | {"status": "not ready"})[0] == {BIG.name}
