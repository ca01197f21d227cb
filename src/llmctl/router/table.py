"""The router's configuration file: its backends, models and limits.

`llmctl render` writes this as `router.yaml` in the `llm-router-config` ConfigMap; the router
reads it with `load_router_config`. Pure data: no I/O beyond reading the file.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmctl import catalog
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
    max_body_bytes: int = Field(1_048_576, alias="maxBodyBytes", ge=1024)
    queue_timeout_seconds: float = Field(30.0, alias="queueTimeoutSeconds", gt=0)
    connect_timeout_seconds: float = Field(2.0, alias="connectTimeoutSeconds", gt=0)
    first_byte_timeout_seconds: float = Field(120.0, alias="firstByteTimeoutSeconds", gt=0)
    idle_timeout_seconds: float = Field(60.0, alias="idleTimeoutSeconds", gt=0)


class HealthCheck(_Strict):
    interval_seconds: float = Field(5.0, alias="intervalSeconds", gt=0)
    max_backoff_seconds: float = Field(60.0, alias="maxBackoffSeconds", gt=0)


class ApiKeys(_Strict):
    """Optional Bearer keys: one per line in a file, or comma-separated in an env var."""

    file: str | None = None
    env: str | None = None


class RouterConfig(_Strict):
    cloud: str
    models: tuple[ModelRoute, ...]
    backends: tuple[Backend, ...]
    policy: Policy
    limits: Limits = Limits()
    health_check: HealthCheck = Field(HealthCheck(), alias="healthCheck")
    api_keys: ApiKeys = Field(ApiKeys(), alias="apiKeys")
    # Other clouds' routers (issue 16, router/peer_config.py); absent: no federation.
    federation: Federation | None = None


def load_router_config(path: Path) -> RouterConfig:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return RouterConfig.model_validate(data)


def dump_router_config(config: RouterConfig) -> str:
    data = config.model_dump(by_alias=True, mode="json")
    if data.get("federation") is None:
        data.pop("federation", None)  # single-cloud configs read as before federation existed
    return yaml.safe_dump(data, sort_keys=False)
