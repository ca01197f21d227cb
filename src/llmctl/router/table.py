"""The router's configuration file: its backends, models and limits.

`llmctl render` writes this as `router.yaml` in the `llm-router-config` ConfigMap; the router
reads it with `load_router_config`. Pure data: no I/O beyond reading the file.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmctl import catalog

# gpuWait is the Stack's too (`router.gpuWait` in llmctl.yaml): defined once in
# config/router_settings.py, which the router may import (config may not import the router).
from llmctl.config.router_settings import GiveUp as GiveUp
from llmctl.config.router_settings import GpuWait as GpuWait

# apiKeys (with named keys and their policies, issue 31) lives in key_config.py.
from llmctl.router.key_config import ApiKeys as ApiKeys
from llmctl.router.peer_config import Federation


class Tier(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ModelRoute(_Strict):
    """A model the router serves, with the numbers the tier policy reads."""

    name: str
    parameters: int = Field(gt=0)
    aliases: tuple[str, ...] = ()


class Backend(_Strict):
    """One llama.cpp server (usually a Kubernetes Service) in one tier of one cloud."""

    name: str  # shown in the x-llm-backend header, e.g. "aws/gpu"
    url: str = Field(pattern=r"^https?://")
    tier: Tier
    cloud: str
    model: str  # the model this llama-server serves (its --alias)
    slots: int = Field(ge=1)  # llama-server --parallel: concurrent requests it takes
    cost_weight: float = Field(1.0, alias="costWeight", ge=0)
    # Estimated dollars per hour of this backend, for llm_router_cost_usd_total.
    hourly_cost_usd: float = Field(0.0, alias="hourlyCostUsd", ge=0)


class Policy(_Strict):
    gpu_parameter_threshold: int = Field(
        catalog.GPU_PARAMETER_THRESHOLD, alias="gpuParameterThreshold"
    )
    gpu_complexities: tuple[str, ...] = Field(catalog.GPU_COMPLEXITIES, alias="gpuComplexities")
    # The model that answers when a request's tier has no ready backend (graceful degradation).
    fallback_model: str = Field(alias="fallbackModel")


class Limits(_Strict):
    """Bounds on what a client, a backend or a shutdown may cost the router (docs/router.md)."""

    max_body_bytes: int = Field(1_048_576, alias="maxBodyBytes", ge=1024)
    queue_timeout_seconds: float = Field(30.0, alias="queueTimeoutSeconds", gt=0)
    connect_timeout_seconds: float = Field(2.0, alias="connectTimeoutSeconds", gt=0)
    first_byte_timeout_seconds: float = Field(120.0, alias="firstByteTimeoutSeconds", gt=0)
    idle_timeout_seconds: float = Field(60.0, alias="idleTimeoutSeconds", gt=0)
    # --- client connections (issue 19) ---
    # From a request's first byte to the end of its headers, and from there to the end of its
    # body: a client slower than this gets 408 and is disconnected.
    header_timeout_seconds: float = Field(10.0, alias="headerTimeoutSeconds", gt=0)
    body_timeout_seconds: float = Field(30.0, alias="bodyTimeoutSeconds", gt=0)
    # An open connection with no request in progress is closed after this long. Longer than a
    # fronting proxy's upstream keep-alive (ingress-nginx: 60 s), so the proxy closes first.
    keep_alive_timeout_seconds: float = Field(75.0, alias="keepAliveTimeoutSeconds", gt=0)
    # Client connections at once. At the cap the longest-idle keep-alive connection is closed
    # to make room; with none idle, the new client gets a fast 503 and a log line.
    max_connections: int = Field(4096, alias="maxConnections", ge=1)
    # Request line plus headers, and the request target alone: checked while reading.
    max_header_bytes: int = Field(65_536, alias="maxHeaderBytes", ge=1024)
    max_url_bytes: int = Field(8192, alias="maxUrlBytes", ge=256)
    # Requests read ahead on one connection while an earlier one is answered (pipelining).
    max_pipelined_requests: int = Field(16, alias="maxPipelinedRequests", ge=1)
    # A non-streamed request with no max_tokens, or at least this many, is streamed from
    # llama-server and answered as one JSON object, so that it is cancelled on the backend
    # when its client leaves (llama-server keeps generating a non-streamed answer). 0: never.
    stream_upstream_from_max_tokens: int = Field(256, alias="streamUpstreamFromMaxTokens", ge=0)
    # --- shutdown (SIGTERM), counted from the signal ---
    # /readyz fails at once; new connections are still accepted for the window (while the
    # Service's endpoints move), then in-flight requests may finish until the deadline.
    drain_window_seconds: float = Field(5.0, alias="drainWindowSeconds", ge=0)
    drain_deadline_seconds: float = Field(60.0, alias="drainDeadlineSeconds", ge=0)

    @model_validator(mode="after")
    def _deadline_after_window(self) -> Limits:
        if self.drain_deadline_seconds < self.drain_window_seconds:
            raise ValueError("drainDeadlineSeconds must not be shorter than drainWindowSeconds")
        return self


class HealthCheck(_Strict):
    interval_seconds: float = Field(5.0, alias="intervalSeconds", gt=0)
    max_backoff_seconds: float = Field(60.0, alias="maxBackoffSeconds", gt=0)


class RouterConfig(_Strict):
    cloud: str
    models: tuple[ModelRoute, ...]
    backends: tuple[Backend, ...]
    policy: Policy
    limits: Limits = Limits()
    health_check: HealthCheck = Field(HealthCheck(), alias="healthCheck")
    api_keys: ApiKeys = Field(ApiKeys(), alias="apiKeys")
    gpu_wait: GpuWait = Field(GpuWait(), alias="gpuWait")
    # Other clouds' routers (issue 16, router/peer_config.py); absent: no federation.
    federation: Federation | None = None


def load_router_config(path: Path) -> RouterConfig:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return RouterConfig.model_validate(data)


# The limits every rendered router.yaml spells out. The others (issue 19) are written only
# when they differ from the router's defaults, so configs rendered before them stay valid
# against the chart's values schema, and the router's defaults apply.
_ALWAYS_RENDERED_LIMITS = (
    "max_body_bytes",
    "queue_timeout_seconds",
    "connect_timeout_seconds",
    "first_byte_timeout_seconds",
    "idle_timeout_seconds",
)


def rendered_limits(limits: Limits) -> dict[str, object]:
    """The `limits:` section as router.yaml and the Helm values write it."""
    data = limits.model_dump(by_alias=True, mode="json")
    defaults = Limits()
    for name, field in Limits.model_fields.items():
        if name not in _ALWAYS_RENDERED_LIMITS and getattr(limits, name) == getattr(defaults, name):
            data.pop(field.alias or name, None)
    return data


def dump_router_config(config: RouterConfig) -> str:
    data = config.model_dump(by_alias=True, mode="json")
    if data.get("federation") is None:
        data.pop("federation", None)  # single-cloud configs read as before federation existed
    if config.gpu_wait == GpuWait():
        data.pop("gpuWait", None)  # configs rendered before issue 31 stay as they were
    # Named keys and the budgets' store (issue 31) only when set, for the same reason.
    keys = data["apiKeys"]
    if not keys["keys"]:
        keys.pop("keys")
    else:  # each key with what it sets, as the Helm chart writes its values
        keys["keys"] = [
            k.model_dump(by_alias=True, mode="json", exclude_defaults=True)
            for k in config.api_keys.keys
        ]
    if keys["budgetStore"] is None:
        keys.pop("budgetStore")
    data["limits"] = rendered_limits(config.limits)
    return yaml.safe_dump(data, sort_keys=False)
