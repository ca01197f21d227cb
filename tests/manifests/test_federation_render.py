"""`render` for federation (issue 16): each cloud's router gets the other clouds' routers as
peers, the router is exposed (Ingress or HTTPRoute, with TLS), API keys and the peer key come
from Secrets, and the Helm chart renders the same from the values render writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import load_stack
from llmctl.errors import ConfigError
from llmctl.manifests import yaml_io
from llmctl.manifests.build import built_objects
from llmctl.manifests.helm_values import helm_values
from llmctl.router.table import RouterConfig
from tests.charts.helm import RELEASE, template, template_error
from tests.charts.test_parity import _unprefix, normalise
from tests.support.kube_schema import validate_strict

URLS = {
    "aws": "https://llm.aws.example.com",
    "azure": "https://llm.azure.example.com:8443",
    "gcp": "https://llm.gcp.example.com/",
}
FEDERATED: dict[str, Any] = {
    "federation": {"enabled": True, "routerUrls": URLS},
    "router": {
        "apiKeys": {"secretName": "llm-router-api-keys"},
        "expose": {"enabled": True, "tls": {"clusterIssuer": "letsencrypt-prod"}},
    },
}
HTTPROUTE: dict[str, Any] = {
    "federation": {"enabled": True, "routerUrls": URLS, "countPeerServedDemand": False},
    "router": {
        "apiKeys": {"secretName": "client-keys", "key": "keys"},
        "expose": {
            "enabled": True,
            "kind": "httproute",
            "gateway": {"name": "public", "namespace": "gateways", "sectionName": "https"},
        },
    },
}
HOSTS = {
    "aws": "llm.aws.example.com",
    "azure": "llm.azure.example.com",
    "gcp": "llm.gcp.example.com",
}


def stack_of(tmp_path: Path, config: dict[str, Any]) -> Any:
    path = tmp_path / "llmctl.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_stack(config_file=path, env={}).stack


def objects(stack: Any, cloud: str, gpu: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["kind"], o["metadata"]["name"]): o for o in built_objects(stack, CloudName(cloud), gpu)
    }


def router_table(objs: dict[tuple[str, str], dict[str, Any]]) -> RouterConfig:
    text = objs[("ConfigMap", "llm-router-config")]["data"]["router.yaml"]
    return RouterConfig.model_validate(yaml.safe_load(text))


def router_pod(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objs[("Deployment", "llm-router")]["spec"]["template"]["spec"]
    return spec


def test_default_stack_has_no_federation_and_no_exposure(tmp_path: Path) -> None:
    stack = stack_of(tmp_path, {"router": {"replicas": 2}})  # ({} trips load_stack)
    for cloud in ("aws", "azure", "gcp"):
        objs = objects(stack, cloud)
        assert not any(kind in ("Ingress", "HTTPRoute") for kind, _ in objs)
        table = router_table(objs)
        assert table.federation is None
        assert table.api_keys.env is None
        env = [e["name"] for e in router_pod(objs)["containers"][0]["env"]]
        assert env == ["LLMCTL_ROUTER_CONFIG", "PORT"]
        values = helm_values(stack, CloudName(cloud), True)
        assert values["federation"]["enabled"] is False
        assert values["router"]["expose"]["enabled"] is False


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_each_router_gets_the_other_clouds_as_peers(tmp_path: Path, cloud: str) -> None:
    stack = stack_of(tmp_path, FEDERATED)
    for gpu in (False, True):
        table = router_table(objects(stack, cloud, gpu))
        assert table.federation is not None
        others = [c.value for c in catalog.CLOUDS if c.value != cloud]
        assert [p.name for p in table.federation.peers] == others
        assert [p.url for p in table.federation.peers] == [URLS[c].rstrip("/") for c in others]
        assert table.federation.peer_key.env == "LLM_ROUTER_PEER_KEY"
        assert table.federation.count_peer_served_demand is True
        # Exposed: API keys are required.
        assert table.api_keys.env == "LLM_ROUTER_API_KEYS"


def test_keys_come_from_secrets(tmp_path: Path) -> None:
    pod = router_pod(objects(stack_of(tmp_path, FEDERATED), "aws"))
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["LLM_ROUTER_API_KEYS"]["valueFrom"] == {
        "secretKeyRef": {"name": "llm-router-api-keys", "key": "api-keys"}
    }
    assert env["LLM_ROUTER_PEER_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "llm-router-peer-key", "key": "peer-key"}
    }


def test_exposed_without_federation_requires_api_keys_but_no_peer_key(tmp_path: Path) -> None:
    config = {
        "federation": {"routerUrls": URLS},
        "router": {"expose": {"enabled": True}, "apiKeys": {"secretName": "keys"}},
    }
    objs = objects(stack_of(tmp_path, config), "gcp")
    assert router_table(objs).api_keys.env == "LLM_ROUTER_API_KEYS"
    assert router_table(objs).federation is None
    env = [e["name"] for e in router_pod(objs)["containers"][0]["env"]]
    assert env == ["LLMCTL_ROUTER_CONFIG", "PORT", "LLM_ROUTER_API_KEYS"]


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_ingress_with_tls_for_the_clouds_host(tmp_path: Path, cloud: str) -> None:
    ingress = objects(stack_of(tmp_path, FEDERATED), cloud)[("Ingress", "llm-router")]
    spec = ingress["spec"]
    assert spec["tls"] == [{"hosts": [HOSTS[cloud]], "secretName": "llm-router-tls"}]
    assert spec["rules"][0]["host"] == HOSTS[cloud]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "llm-router", "port": {"name": "http"}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


def test_httproute_attaches_to_the_gateway(tmp_path: Path) -> None:
    stack = stack_of(tmp_path, HTTPROUTE)
    objs = objects(stack, "azure")
    assert ("Ingress", "llm-router") not in objs
    route = objs[("HTTPRoute", "llm-router")]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"name": "public", "namespace": "gateways", "sectionName": "https"}
    ]
    assert route["spec"]["hostnames"] == ["llm.azure.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "llm-router", "port": 80}]
    table = router_table(objs)
    assert table.federation is not None and table.federation.count_peer_served_demand is False


def _with_wait(config: dict[str, Any], max_seconds: float) -> dict[str, Any]:
    router = {**config["router"], "gpuWait": {"maxSeconds": max_seconds}}
    return {**config, "router": router}


@pytest.mark.parametrize(
    ("max_seconds", "timeout"),
    [(None, 300), (179.5, 300), (180.5, 301), (600, 720), (10_000_000, 99_999)],
)
def test_the_exposed_routers_proxy_waits_as_long_as_a_gpu_wait(
    tmp_path: Path, max_seconds: float | None, timeout: int
) -> None:
    """Nothing reaches a waiting client (docs/router.md, "Waiting for a GPU"), so the Ingress
    and the HTTPRoute allow gpuWait.maxSeconds plus the backend's first byte (120 s): at least
    the 300 s a long generation needs, at most the 5 digits of seconds a Gateway API Duration
    holds. The chart computes the same (test_chart_renders_what_kustomize_builds_when_federated
    below compares the objects)."""
    for config in (FEDERATED, HTTPROUTE):
        if max_seconds is not None:
            config = _with_wait(config, max_seconds)
        objs = objects(stack_of(tmp_path, config), "aws")
        if ("Ingress", "llm-router") in objs:
            annotations = objs[("Ingress", "llm-router")]["metadata"]["annotations"]
            assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == str(timeout)
        else:
            rule = objs[("HTTPRoute", "llm-router")]["spec"]["rules"][0]
            assert rule["timeouts"] == {"request": f"{timeout}s"}


def test_only_the_api_and_readyz_are_exposed(tmp_path: Path) -> None:
    """Review 2026-12-06 N6: `path: /` made /metrics (cost per cloud, token counts, peer names)
    and /healthz public; peers need /readyz and clients /v1 only."""
    ingress = objects(stack_of(tmp_path, FEDERATED), "aws")[("Ingress", "llm-router")]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/v1", "Prefix"), ("/readyz", "Exact")]
    route = objects(stack_of(tmp_path, HTTPROUTE), "azure")[("HTTPRoute", "llm-router")]
    matches = [m["path"] for rule in route["spec"]["rules"] for m in rule["matches"]]
    assert matches == [
        {"type": "PathPrefix", "value": "/v1"},
        {"type": "Exact", "value": "/readyz"},
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"federation": {"enabled": True}}, "federation.routerUrls.aws"),
        (
            {"federation": {"enabled": True, "routerUrls": {"aws": URLS["aws"]}}},
            "federation.routerUrls.azure, federation.routerUrls.gcp",
        ),
        (
            {
                "federation": {"enabled": True, "routerUrls": URLS},
                "router": {"apiKeys": {"secretName": "keys"}},
            },
            "router.expose.enabled: true",
        ),
        ({"router": {"expose": {"enabled": True}}}, "public router URL"),
        (
            {"federation": {"routerUrls": URLS}, "router": {"expose": {"enabled": True}}},
            "an exposed router requires API keys: set router.apiKeys.secretName",
        ),
        ({"federation": {"routerUrls": {"aws": "llm.aws.example.com"}}}, "routerUrls.aws"),
        ({"router": {"expose": {"kind": "loadbalancer"}}}, "router.expose.kind"),
    ],
)
def test_incomplete_federation_is_a_clear_config_error(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        stack_of(tmp_path, config)
    assert message in str(caught.value)


# --- the chart renders the same ---------------------------------------------------------------

EXPOSED = {"Ingress", "HTTPRoute"}


@pytest.mark.parametrize(
    ("config", "cloud"),
    [
        (FEDERATED, "gcp"),
        (HTTPROUTE, "aws"),
        (_with_wait(FEDERATED, 600), "azure"),
        (_with_wait(HTTPROUTE, 1000.5), "gcp"),
    ],
)
def test_chart_renders_what_kustomize_builds_when_federated(
    tmp_path: Path, config: dict[str, Any], cloud: str
) -> None:
    stack = stack_of(tmp_path, config)
    for gpu in (False, True):
        values = tmp_path / f"values-{gpu}.yaml"
        values.write_text(yaml_io.dump(helm_values(stack, CloudName(cloud), gpu)))
        chart_objects = template("-f", str(values))
        built = built_objects(stack, CloudName(cloud), gpu)
        prefix = f"{RELEASE}-"
        assert normalise(chart_objects, prefix=prefix) == normalise(built, prefix="")
        chart_exposed = [o for o in chart_objects if o["kind"] in EXPOSED]
        built_exposed = [o for o in built if o["kind"] in EXPOSED]
        assert len(chart_exposed) == len(built_exposed) == 1
        for obj in (*chart_exposed, *built_exposed):
            obj["metadata"].pop("labels")
            obj["metadata"].pop("namespace")
        assert _unprefix(chart_exposed[0], prefix) == built_exposed[0]


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_federated_objects_pass_the_kubernetes_schemas(tmp_path: Path, cloud: str) -> None:
    """Everything but the HTTPRoute (a Gateway API CRD, checked field by field above)."""
    for config in (FEDERATED, HTTPROUTE, _with_wait(FEDERATED, 600)):
        for obj in built_objects(stack_of(tmp_path, config), CloudName(cloud), True):
            if obj["kind"] != "HTTPRoute":
                validate_strict(obj)


def test_chart_refuses_an_exposed_router_without_api_keys_or_host() -> None:
    base = ("--set", "router.expose.enabled=true")
    assert "requires API keys" in template_error(
        *base, "--set", "router.expose.host=llm.example.com"
    )
    assert "router.expose.host" in template_error(*base, "--set", "router.apiKeys.secretName=k")
    assert "federation.peers" in template_error(
        *base,
        "--set", "router.expose.host=llm.example.com",
        "--set", "router.apiKeys.secretName=k",
        "--set", "federation.enabled=true",
    )  # fmt: skip
