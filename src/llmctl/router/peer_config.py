"""The `federation:` section of the router's config (issue 16): the other clouds' routers it may
forward GPU requests to, and the peer key they authenticate with. Pure data.

```yaml
federation:
  peers:
    - {name: gcp, cloud: gcp, url: "https://llm.gcp.example.com", costWeight: 1.0}
    - {name: azure, cloud: azure, url: "https://llm.azure.example.com"}
  peerKey: {file: /etc/llm-router/peer/peer-key}   # and/or env: LLM_ROUTER_PEER_KEY
```

Absent (the default), the router forwards nothing and accepts no request from a peer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Peer(_Strict):
    """Another cloud's router, reached at its public (Ingress or Gateway) URL."""

    name: str = Field(min_length=1)  # shown in x-llm-peer and the peer metrics, e.g. "gcp"
    cloud: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://[^/\s]+(/\S*)?$")
    cost_weight: float = Field(1.0, alias="costWeight", ge=0)


class PeerKey(_Strict):
    """The key peers send and accept: one a line in a file (the first is sent, all are accepted,
    for rotation), and/or comma-separated in an env var. Never a client API key."""

    file: str | None = None
    env: str | None = None


class Federation(_Strict):
    peers: tuple[Peer, ...] = ()
    peer_key: PeerKey = Field(PeerKey(), alias="peerKey")
    # A GPU request served by a peer still counts in the local llm_router_tier_demand{tier=gpu}
    # (and tier_requests_total), so the local pool wakes and later requests stay local.
    count_peer_served_demand: bool = Field(True, alias="countPeerServedDemand")
    # How often each peer's /readyz is read; one failed read marks the peer not ready.
    readiness_interval_seconds: float = Field(2.0, alias="readinessIntervalSeconds", gt=0)
    connect_timeout_seconds: float = Field(2.0, alias="connectTimeoutSeconds", gt=0)
    # Before a peer's response headers; unset: limits.firstByteTimeoutSeconds. A non-streamed
    # completion's headers come with its whole body, so keep it above the longest generation.
    first_byte_timeout_seconds: float | None = Field(None, alias="firstByteTimeoutSeconds", gt=0)
    # Weight of the newest time-to-first-byte sample in the peer's moving average.
    ewma_alpha: float = Field(0.3, alias="ewmaAlpha", gt=0, le=1)
    # A CA bundle for https peers whose certificates the system store does not trust.
    ca_file: str | None = Field(None, alias="caFile")
