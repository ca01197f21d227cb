"""Federation's routing choice (issue 16): which peer routers, in other clouds, a request tries
before the local route. Pure functions over plain data; no I/O, no clock.

A peer is another cloud's router. Its `/readyz` says, per tier, which model it serves and how
many slots it has and how many are free (`peers.py` polls it). The order for a GPU request:

1. a local GPU backend with a free slot (the local route, unchanged: no peer is tried);
2. then the ready peers' GPU tiers, best first: those with a free slot before those without,
   then the lowest weighted utilisation `(slots - free + 1) / slots * costWeight`, then the
   lowest measured latency (EWMA of time to first byte), then the configured order;
3. then the local route as `policy.plan_route` made it: a local GPU backend that is ready but
   full (the request waits for a slot there), else the local CPU fallback, else the refusal.

When the local GPU is ready but full, only peers with a free slot go first: waiting at home
costs no egress. When no local GPU is ready, every ready peer GPU goes first, full or not
(a peer's report is up to one poll old).

A CPU request stays local unless no local CPU backend is ready; then the peers' CPU tiers go
first, ranked the same way, before today's local answer (a local GPU, or the refusal).

A request that came from a peer (it carries the hop marker) is never sent to a peer again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmctl.router.policy import BackendView, Refusal, Route, Served
from llmctl.router.table import Tier

# The request header that marks a request forwarded by a peer router; its value is the cloud
# of the router that forwarded it. A router never forwards a request that has it.
HOP_HEADER = "x-llm-hop"
# The response header that says which peer answered (absent when a local backend did).
PEER_HEADER = "x-llm-peer"


@dataclass(frozen=True)
class TierCapacity:
    """One model served in one tier of a peer, as its /readyz reports it."""

    model: str
    slots: int
    free: int


@dataclass(frozen=True)
class PeerView:
    """What the choice reads of a peer router's live state (peers.PeerState provides it)."""

    name: str
    ready: bool
    cost_weight: float = 1.0
    ttfb: float | None = None  # EWMA of the time to first byte, seconds; None: not measured
    models: frozenset[str] = frozenset()  # the model names it answers (its configured models)
    tiers: Mapping[Tier, tuple[TierCapacity, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerChoice:
    """One peer to try, with the tier capacity that made it a candidate."""

    peer: PeerView
    tier: Tier
    capacity: TierCapacity


def peer_score(choice: PeerChoice) -> tuple[int, float, float]:
    """Lower is better: a free slot first, then weighted utilisation, then measured latency.

    The utilisation is what the peer's tier would be at after taking this request,
    (slots - free + 1) / slots, times the peer's cost weight, as `policy.backend_score` does
    for local backends: weight 0 means "free", fill it first. A peer not measured yet counts
    as latency 0, so it gets tried and measured.
    """
    capacity = choice.capacity
    full = 1 if capacity.free <= 0 else 0
    busy = capacity.slots - max(capacity.free, 0)
    utilisation = (busy + 1) / max(capacity.slots, 1) * max(choice.peer.cost_weight, 1e-9)
    latency = choice.peer.ttfb if choice.peer.ttfb is not None else 0.0
    return full, utilisation, latency


def rank_peers(
    peers: Sequence[PeerView],
    tier: Tier,
    model: str,
    *,
    free_only: bool = False,
    exclude: Sequence[str] = (),
) -> list[PeerChoice]:
    """Ready peers whose `tier` can answer `model`, best first; at most one choice per peer.

    A peer must know the model's name (else it would answer 404). As for local backends, a
    tier serving exactly `model` is preferred; when no ready peer's tier does, the tiers' own
    models answer. Ties keep the configured order.
    """
    offers: list[PeerChoice] = []
    for peer in peers:
        if not peer.ready or peer.name in exclude or model not in peer.models:
            continue
        for capacity in peer.tiers.get(tier, ()):
            if capacity.slots <= 0:
                continue
            if free_only and capacity.free <= 0:
                continue
            offers.append(PeerChoice(peer, tier, capacity))
    exact = [o for o in offers if o.capacity.model == model]
    candidates = exact or offers
    best: dict[str, PeerChoice] = {}
    for offer in candidates:
        kept = best.get(offer.peer.name)
        if kept is None or peer_score(offer) < peer_score(kept):
            best[offer.peer.name] = offer
    ranked = list(best.values())  # dicts keep insertion order: the configured order
    ranked.sort(key=peer_score)
    return ranked


def _has_free_slot(route: Route) -> bool:
    return any(b.load < b.slots for b in route.backends)


def peer_choices(
    route: Route | Refusal,
    model: str,
    peers: Sequence[PeerView],
    *,
    hop: bool,
) -> list[PeerChoice]:
    """The peers to try before the local `route` (policy.plan_route's decision), best first.

    Empty when the request came from a peer (`hop`), when the local route serves a CPU request
    on a local CPU backend (full or not), or a GPU request on a local GPU with a free slot.
    """
    if hop or not peers:
        return []
    wanted = route.wanted
    own_tier = Served.GPU if wanted == Tier.GPU else Served.CPU
    if isinstance(route, Route) and route.served == own_tier:
        if wanted == Tier.CPU or _has_free_slot(route):
            return []
        # Ready but full at home: only a peer with a free slot beats waiting for one here.
        return rank_peers(peers, wanted, model, free_only=True)
    return rank_peers(peers, wanted, model)


# --- what /readyz says about the local tiers, and reading it back from a peer ---------------


def local_capacity(backends: Sequence[BackendView]) -> dict[str, list[dict[str, object]]]:
    """Per tier, each model's slots and free slots over the ready backends: the `tiers` field
    of /readyz that peers read. A backend's free slots are its slots minus its load."""
    totals: dict[tuple[str, str], list[int]] = {}
    for backend in backends:
        if not backend.ready:
            continue
        entry = totals.setdefault((backend.tier.value, backend.model), [0, 0])
        entry[0] += backend.slots
        entry[1] += max(backend.slots - backend.load, 0)
    tiers: dict[str, list[dict[str, object]]] = {}
    for (tier, model), (slots, free) in totals.items():
        tiers.setdefault(tier, []).append({"model": model, "slots": slots, "free": free})
    return tiers


def parse_capacity(body: object) -> tuple[frozenset[str], dict[Tier, tuple[TierCapacity, ...]]]:
    """The models and tier capacities in a peer's /readyz body; ValueError if it has none
    (not a router that speaks federation) or if the peer is draining (SIGTERM)."""
    if not isinstance(body, dict):
        raise ValueError("the /readyz body is not a JSON object")
    if body.get("status") == "draining":  # shutting down: it takes no new requests
        raise ValueError("the peer is draining")
    models, tiers = body.get("models"), body.get("tiers")
    if not isinstance(models, dict) or not isinstance(tiers, dict):
        raise ValueError("the /readyz body has no 'models' and 'tiers'")
    capacities: dict[Tier, tuple[TierCapacity, ...]] = {}
    for tier in Tier:
        entries = tiers.get(tier.value, [])
        if not isinstance(entries, list):
            raise ValueError(f"/readyz tiers.{tier.value} is not a list")
        parsed = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError(f"/readyz tiers.{tier.value} has a non-object entry")
            model, slots, free = entry.get("model"), entry.get("slots"), entry.get("free")
            if not isinstance(model, str) or type(slots) is not int or type(free) is not int:
                raise ValueError(f"/readyz tiers.{tier.value} entry {entry!r} is malformed")
            parsed.append(TierCapacity(model, slots, free))
        if parsed:
            capacities[tier] = tuple(parsed)
    return frozenset(str(name) for name in models), capacities
