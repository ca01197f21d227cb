"""The router's backend table for one cloud, with or without its GPU tier."""

from __future__ import annotations

import math

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import NAMESPACE, ModelSpec, Stack
from llmctl.cost.prices import Capacity, load_catalog
from llmctl.errors import ConfigError
from llmctl.manifests.llamacpp import LLAMA_PORT
from llmctl.router.peer_config import Federation, Peer, PeerKey
from llmctl.router.table import ApiKeys, Backend, Limits, ModelRoute, Policy, RouterConfig, Tier

CPU_SERVER = "cpu-llm-server"
GPU_SERVER = "gpu-llm-server"
# The router pod's variable holding its API keys (from router.apiKeys.secretName).
ROUTER_API_KEYS_ENV = "LLM_ROUTER_API_KEYS"
# ... and the peer key (federation, from federation.peerKeySecret, key peer-key).
ROUTER_PEER_KEY_ENV = "LLM_ROUTER_PEER_KEY"
PEER_KEY_SECRET_KEY = "peer-key"
# The bounds of the exposed router's proxy timeout (proxy_timeout_seconds).
MIN_PROXY_TIMEOUT_SECONDS = 300
MAX_PROXY_TIMEOUT_SECONDS = 99_999


def service_url(name: str) -> str:
    return f"http://{name}.{NAMESPACE}.svc.cluster.local:{LLAMA_PORT}"


def _route(model: ModelSpec) -> ModelRoute:
    return ModelRoute(name=model.name, parameters=model.parameters, aliases=model.aliases)


def hourly_cost_usd(stack: Stack, cloud: CloudName, instance_type: str) -> float:
    """A spot node's price from the shipped catalog: the router turns each request's share of a
    backend's time into llm_router_cost_usd_total. 0 (no cost counted) where nothing is priced."""
    try:
        price = load_catalog().node_hourly_usd(
            cloud, stack.clouds.of(cloud).region, instance_type, Capacity.SPOT
        )
    except ConfigError:
        return 0.0
    return round(price, 4)


def _backend(stack: Stack, cloud: CloudName, tier: Tier, instance_type: str) -> Backend:
    """The tier's llama.cpp Service in this cloud, priced by its node's instance type."""
    spec = stack.gpu if tier is Tier.GPU else stack.cpu
    return Backend(
        name=f"{cloud.value}/{tier.value}",
        url=service_url(GPU_SERVER if tier is Tier.GPU else CPU_SERVER),
        tier=tier,
        cloud=cloud.value,
        model=spec.model.name,
        slots=spec.llamacpp.parallel,
        hourly_cost_usd=hourly_cost_usd(stack, cloud, instance_type),
    )


def router_config(stack: Stack, cloud: CloudName, gpu: bool) -> RouterConfig:
    models = [_route(stack.cpu.model)]
    backends = [_backend(stack, cloud, Tier.CPU, catalog.DEFAULT_CPU_INSTANCE_TYPES[cloud])]
    if gpu:
        if stack.gpu.model.name != stack.cpu.model.name:
            models.append(_route(stack.gpu.model))
        backends.append(_backend(stack, cloud, Tier.GPU, stack.gpu.instance_types.of(cloud)))
    return RouterConfig(
        cloud=cloud.value,
        models=tuple(models),
        backends=tuple(backends),
        policy=Policy(fallback_model=stack.cpu.model.name),
        api_keys=api_keys(stack),
        gpu_wait=stack.router.gpu_wait,
        federation=federation(stack, cloud),
    )


def proxy_timeout_seconds(stack: Stack) -> int:
    """How long the router's Ingress or HTTPRoute (router.expose) waits for its first byte: the
    longest GPU wait (gpuWait.maxSeconds, nothing is sent while a request waits) plus the
    backend's first byte, and at least 300 s, which a long generation needs; at most 99,999 s,
    the longest Gateway API Duration written in seconds (5 digits). The Helm chart's
    llm-router.proxyTimeoutSeconds is the same sum."""
    first_byte = Limits().first_byte_timeout_seconds
    wanted = math.ceil(stack.router.gpu_wait.max_seconds + first_byte)
    return min(MAX_PROXY_TIMEOUT_SECONDS, max(MIN_PROXY_TIMEOUT_SECONDS, wanted))


def api_keys(stack: Stack) -> ApiKeys:
    """router.yaml's apiKeys: the variable the Secret's value reaches the pod in, and the named
    keys' policies. The secrets themselves are never written: only the Secret's name, in the
    Deployment's secretKeyRef."""
    keys = stack.router.api_keys
    if keys.secret_name is None:
        return ApiKeys()  # the Stack refuses named keys without a Secret
    return ApiKeys(env=ROUTER_API_KEYS_ENV, keys=keys.keys, budget_store=keys.budget_store)


def federation(stack: Stack, cloud: CloudName) -> Federation | None:
    """The other clouds' routers as this router's peers (issue 16); None when off."""
    if not stack.federation.enabled:
        return None
    peers = []
    for other in catalog.CLOUDS:
        url = stack.federation.router_urls.of(other)
        if other != cloud and url is not None:
            peers.append(Peer(name=other.value, cloud=other.value, url=url.rstrip("/")))
    return Federation(
        peers=tuple(peers),
        peer_key=PeerKey(env=ROUTER_PEER_KEY_ENV),
        count_peer_served_demand=stack.federation.count_peer_served_demand,
    )
