"""The chart deploys what the Kustomize overlays deploy.

For each cloud, with and without the GPU tier, the workload objects of
`helm template -f values-<cloud>-{gpu,cpu}.yaml` must equal those of
`kubectl kustomize clusters/<cloud>/{overlays/gpu,base}` in every field that decides behaviour:
the whole object is compared after normalising only what may differ (names by the release
prefix, labels, namespaces). Label selectors are compared by what they select, so a selector
that picks the wrong pods fails too.
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import load_stack
from llmctl.manifests import yaml_io
from llmctl.manifests.build import built_objects
from llmctl.manifests.helm_values import helm_values
from llmctl.router.table import RouterConfig
from tests.charts.helm import RELEASE, template, values_file
from tests.support.tools import require_tool

CASES = [(cloud.value, tier) for cloud in catalog.CLOUDS for tier in ("cpu", "gpu")]
IDS = [f"{cloud}-{tier}" for cloud, tier in CASES]

# Everything both paths deploy (the chart has nothing else), scaling and monitoring included.
COMPONENTS = {"router", "llama-cpu", "llama-gpu", "device-plugin", "dcgm-exporter"}
KINDS = {
    "ScaledObject",
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "ServiceAccount",
    "ConfigMap",
    "Deployment",
    "DaemonSet",
    "Service",
    "PersistentVolumeClaim",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "RuntimeClass",
}
ROUTER_CONFIG = "llm-router-config"
DASHBOARD = "llm-router-dashboard"
CHECKSUM = "llmctl.dev/router-config-sha256"

Objects = list[dict[str, Any]]


def _kustomize(repo: Path, cloud: str, tier: str) -> Objects:
    kubectl = require_tool("kubectl")
    directory = repo / "clusters" / cloud / ("overlays/gpu" if tier == "gpu" else "base")
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _workloads(objects: Objects) -> Objects:
    return [
        o
        for o in objects
        if o["kind"] in KINDS
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") in COMPONENTS
        and (o["kind"] != "ConfigMap" or o["metadata"]["name"].endswith((ROUTER_CONFIG, DASHBOARD)))
    ]


def _unprefix(value: Any, prefix: str) -> Any:
    """Every string that is a chart object name loses the release prefix."""
    if isinstance(value, dict):
        return {k: _unprefix(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_unprefix(v, prefix) for v in value]
    if isinstance(value, str) and prefix and value.startswith(prefix):
        return value[len(prefix) :]
    return value


class _Selects:
    """Replaces a label selector with the sorted names of the pod templates it matches."""

    def __init__(self, objects: Objects, prefix: str) -> None:
        self.pods = [
            (_unprefix(o["metadata"]["name"], prefix), o["spec"]["template"]["metadata"]["labels"])
            for o in objects
            if o["kind"] in {"Deployment", "DaemonSet"}
        ]

    def __call__(
        self, match_labels: dict[str, str], expressions: list[dict[str, Any]] | None = None
    ) -> dict[str, list[str]]:
        chosen = sorted(
            name
            for name, labels in self.pods
            if all(labels.get(k) == v for k, v in match_labels.items())
            and all(labels.get(e["key"]) in e["values"] for e in expressions or [])
        )
        assert chosen, f"selector {match_labels} {expressions} selects no pods"
        return {"selects": chosen}

    def services(self, objects: Objects, prefix: str, match_labels: dict[str, str]) -> list[str]:
        chosen = sorted(
            _unprefix(o["metadata"]["name"], prefix)
            for o in objects
            if o["kind"] == "Service"
            and all(o["metadata"]["labels"].get(k) == v for k, v in match_labels.items())
        )
        assert chosen, f"selector {match_labels} selects no services"
        return chosen


def _router_table(text: str, prefix: str) -> dict[str, Any]:
    table = yaml.safe_load(text)
    RouterConfig.model_validate(table)  # the router can load it
    for backend in table["backends"]:
        backend["url"] = re.sub(
            r"^http://" + re.escape(prefix), "http://", backend["url"]
        )  # demo-cpu-llm-server.llm-server.svc... -> cpu-llm-server.llm-server.svc...
    return dict(table)


def normalise(objects: Objects, prefix: str) -> dict[tuple[str, str], dict[str, Any]]:
    selects = _Selects(objects, prefix)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for original in _workloads(objects):
        obj = copy.deepcopy(original)
        kind = obj["kind"]
        meta = obj["metadata"]
        # Labels and namespace may differ; annotations (the model reader's workload identity)
        # must be equal; nothing else may exist in metadata.
        assert set(meta) <= {"name", "namespace", "labels", "annotations"}, meta
        obj["metadata"] = {"name": meta["name"]}
        if "annotations" in meta:
            obj["metadata"]["annotations"] = meta["annotations"]
        spec = obj.get("spec", {})
        if kind == "ConfigMap" and "router.yaml" in obj["data"]:
            text = obj["data"]["router.yaml"]
            obj["data"]["router.yaml"] = _router_table(text, prefix)
        if kind in {"Deployment", "DaemonSet"}:
            spec["selector"] = selects(spec["selector"]["matchLabels"])
            template_meta = spec["template"]["metadata"]
            template_meta.pop("labels")
            for volume in spec["template"]["spec"].get("volumes", []):
                # A per-pod claim carries its tier's labels, which may differ like any labels.
                claim = volume.get("ephemeral", {}).get("volumeClaimTemplate", {})
                claim.get("metadata", {}).pop("labels", None)
            for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
                constraint["labelSelector"] = selects(constraint["labelSelector"]["matchLabels"])
            annotations = template_meta.get("annotations", {})
            if CHECKSUM in annotations:
                # Each path hashes its own router.yaml text; the tables are compared above.
                config = next(o for o in objects if o["metadata"]["name"].endswith(ROUTER_CONFIG))
                digest = hashlib.sha256(config["data"]["router.yaml"].encode()).hexdigest()
                assert annotations[CHECKSUM] == digest
                annotations[CHECKSUM] = "<sha256 of router.yaml>"
            if not template_meta:
                spec["template"].pop("metadata")
        if kind == "Service":
            spec["selector"] = selects(spec["selector"])
        if kind == "PodDisruptionBudget":
            spec["selector"] = selects(spec["selector"]["matchLabels"])
        if kind == "NetworkPolicy":
            spec["podSelector"] = selects(spec["podSelector"]["matchLabels"])
            for rule in spec["ingress"]:
                for peer in rule["from"]:
                    if "podSelector" in peer:
                        peer["podSelector"] = selects(peer["podSelector"]["matchLabels"])
        if kind == "ServiceMonitor":
            spec["selector"] = selects.services(objects, prefix, spec["selector"]["matchLabels"])
        if kind == "PodMonitor":
            selector = spec["selector"]
            spec["selector"] = selects(selector["matchLabels"], selector["matchExpressions"])
        if kind == "ScaledObject":
            for trigger in spec["triggers"]:
                # The utilisation query names the GPU pods: demo-gpu-llm-server-... in the chart.
                query = trigger["metadata"]["query"]
                trigger["metadata"]["query"] = query.replace(f'"{prefix}', '"')
        obj = _unprefix(obj, prefix)
        key = (kind, obj["metadata"]["name"])
        assert key not in out, f"two {key}"
        out[key] = obj
    return out


@pytest.mark.parametrize(("cloud", "tier"), CASES, ids=IDS)
def test_chart_deploys_what_the_overlay_deploys(repo: Path, cloud: str, tier: str) -> None:
    chart_objects = template("-f", values_file(cloud, tier))
    assert _workloads(chart_objects) == chart_objects, "the chart renders something unexpected"
    chart = normalise(chart_objects, prefix=f"{RELEASE}-")
    kustomize = normalise(_kustomize(repo, cloud, tier), prefix="")
    assert sorted(chart) == sorted(kustomize)
    for key in kustomize:
        assert chart[key] == kustomize[key], f"{key} differs between the chart and kustomize"


def test_normalise_catches_a_behaviour_difference(repo: Path) -> None:
    """The comparison is not vacuous: one changed field, one wrong selector, each fail it."""
    kustomize = normalise(_kustomize(repo, "azure", "gpu"), prefix="")
    chart_objects = template("-f", values_file("azure", "gpu"), "--set", "llamacpp.parallel=5")
    chart = normalise(chart_objects, prefix=f"{RELEASE}-")
    assert chart[("Deployment", "gpu-llm-server")] != kustomize[("Deployment", "gpu-llm-server")]
    assert chart[("ConfigMap", ROUTER_CONFIG)] != kustomize[("ConfigMap", ROUTER_CONFIG)]

    same = template("-f", values_file("azure", "gpu"))
    service = next(o for o in same if o["kind"] == "Service" and "cpu" in o["metadata"]["name"])
    service["spec"]["selector"]["app.kubernetes.io/component"] = "llama-gpu"
    broken = normalise(same, prefix=f"{RELEASE}-")
    assert broken[("Service", "cpu-llm-server")] != kustomize[("Service", "cpu-llm-server")]


# A config far from the defaults: other models, unified KV cache, threads, another GPU, replicas.
CUSTOM = {
    "imagePullSecrets": ["regcred", "mirror"],
    "images": {"modelFetcher": "registry.example.com/mirror/fetcher:1"},
    "modelDownload": {"tokenSecret": "hub-token", "tokenKey": "hf"},
    "router": {
        "replicas": 3,
        # Named keys, their store and gpuWait (issue 31): one router.yaml on both paths.
        "apiKeys": {
            "secretName": "router-keys",
            "key": "keys",
            "keys": [
                {"name": "team-a", "gpuTokensPerDay": 200_000, "overBudget": "refuse"},
                {"name": "batch", "tiers": ["cpu"], "requestsPerMinute": 30, "gpuWaitSeconds": 5},
            ],
            "budgetStore": {
                "prometheusUrl": "http://prometheus.example:9090",
                "matchers": 'namespace="llm-server"',
            },
        },
        "gpuWait": {"defaultSeconds": 20, "maxSeconds": 240, "maxDepth": 16, "onGiveUp": "reject"},
    },
    "cpu": {
        "replicas": 2,
        "llamacpp": {"ctx_per_request": 1024, "parallel": 4, "threads": 3},
        "model": {
            "name": "smollm2-135m",
            "uri": "https://example.com/smollm2.gguf",
            "path": "/data/models/smollm2.gguf",
            "storageSize": "1Gi",
            "storageClassName": "gp3",
            "sha256": "ab" * 32,
            "parameters": 135_000_000,
        },
    },
    "gpu": {
        "count": 2,
        "minReplicas": 1,
        "instanceTypes": {"aws": "g5.xlarge", "gcp": "g2-standard-4"},
        "llamacpp": {
            "ngl": 33,
            "flash_attn": False,
            "ctx_size": 4096,
            "parallel": 8,
            "device": "CUDA0,CUDA1",
        },
        "model": {
            "name": "llama-2-13b-chat",
            "uri": "https://example.com/llama-2-13b-chat.gguf",
            "path": "/models/llama-2-13b-chat.gguf",
            "storageSize": "30Gi",
            "storageClassName": "premium-zrs",
            "parameters": 13_015_864_320,
        },
    },
}


@pytest.mark.parametrize("cloud", [c.value for c in catalog.CLOUDS])
def test_values_from_any_config_render_what_the_overlay_builds(cloud: str, tmp_path: Path) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text(yaml.safe_dump(CUSTOM))
    stack = load_stack(config_file=config, env={}).stack
    assert stack.gpu.llamacpp.unified  # 4096 / 8 slots is short of 2048: --kv-unified
    assert stack.router.gpu_wait.default_seconds == 20 and len(stack.router.api_keys.keys) == 2
    for gpu in (False, True):
        values = tmp_path / f"values-{gpu}.yaml"
        values.write_text(yaml_io.dump(helm_values(stack, CloudName(cloud), gpu)))
        chart = normalise(template("-f", str(values)), prefix=f"{RELEASE}-")
        built = normalise(built_objects(stack, CloudName(cloud), gpu), prefix="")
        assert chart == built


STORE_SETTINGS = [
    "modelStore.aws.bucket=acme-llm-models",
    "modelStore.aws.roleArn=arn:aws:iam::123456789012:role/llm-model-reader",
    "modelStore.gcp.bucket=acme-llm-models-gcp",
    "modelStore.azure.account=acmellmmodels",
    "modelStore.azure.container=models",
    "modelStore.azure.clientId=0b3f1c52-6f0e-4f7d-9a55-2f3c8f1e9a10",
]


@pytest.mark.parametrize(("cloud", "tier"), CASES, ids=IDS)
def test_with_a_model_store_the_chart_still_deploys_what_the_overlay_deploys(
    tmp_path: Path, cloud: str, tier: str
) -> None:
    """Issue 30: the store's URI, the fetcher, the reading ServiceAccount and its workload
    identity reach the pods the same way on both paths."""
    from llmctl.config import parse_set_flags
    from llmctl.manifests.render import render_tree
    from llmctl.manifests.writer import tree_files, values_files_text, write_files

    stack = load_stack(env={}, flags=parse_set_flags(STORE_SETTINGS)).stack
    write_files(tmp_path / "clusters", tree_files(render_tree(stack)))
    values = {
        f"values-{c.value}-{t}.yaml": helm_values(stack, c, t == "gpu")
        for c in catalog.CLOUDS
        for t in ("cpu", "gpu")
    }
    write_files(tmp_path / "charts", values_files_text(values))
    chart_objects = template("-f", str(tmp_path / "charts" / f"values-{cloud}-{tier}.yaml"))
    chart = normalise(chart_objects, prefix=f"{RELEASE}-")
    kustomize = normalise(_kustomize(tmp_path, cloud, tier), prefix="")
    assert sorted(chart) == sorted(kustomize)
    for key in kustomize:
        assert chart[key] == kustomize[key], f"{key} differs between the chart and kustomize"
    fetcher = chart[("Deployment", "cpu-llm-server")]["spec"]["template"]["spec"]
    assert fetcher["initContainers"][0]["command"] == ["llmctl", "model", "fetch"]
