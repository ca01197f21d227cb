"""Preflight: what a scale-from-zero GPU pool needs on this cluster (`llmctl gpu enable/status`).

The reads that gather `ClusterFacts` (default StorageClass, device plugins, GPU Operator,
cluster-autoscaler, Karpenter, RuntimeClasses), then pure policy on those facts: the `Check`s,
the GPU objects worth applying here, and what blocks scale-from-zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmctl import catalog
from llmctl.kube.client import DEPLOYMENTS, call, get_or_none, kube_errors
from llmctl.kube.kinds import kind_of

PREFLIGHT_RIGHTS = (
    "to list StorageClasses, DaemonSets, Deployments and RuntimeClasses and to get "
    "CustomResourceDefinitions (cluster-admin has them; `view` plus CRD read is enough)"
)
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Images of NVIDIA's device plugin (static manifest, Helm chart, GPU Operator) and GKE's own.
DEVICE_PLUGIN_IMAGES = ("k8s-device-plugin", "nvidia-gpu-device-plugin")
GPU_OPERATOR_CRD = "clusterpolicies.nvidia.com"
KARPENTER_CRD = "nodepools.karpenter.sh"


@dataclass(frozen=True)
class DevicePlugin:
    namespace: str
    name: str
    image: str
    by_llmctl: bool
    ready: int = 0

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster already runs that scale-from-zero GPU nodes depend on."""

    default_storage_class: str | None
    device_plugins: tuple[DevicePlugin, ...]
    gpu_operator: bool
    autoscalers: tuple[str, ...]
    karpenter: bool
    runtime_classes: Mapping[str, str]  # name -> handler


def _items(api: Any, path: str, what: str) -> list[dict[str, Any]]:
    with kube_errors(what, PREFLIGHT_RIGHTS):
        return list(call(api, "GET", path, []).get("items", []))


def default_storage_class(api: Any) -> str | None:
    """The StorageClass annotated as the cluster's default (the model cache's PVCs use it)."""
    for sc in _items(
        api, kind_of("storage.k8s.io/v1", "StorageClass").path(), "listing StorageClasses"
    ):
        annotations = sc["metadata"].get("annotations") or {}
        if annotations.get(DEFAULT_CLASS_ANNOTATION) == "true":
            return str(sc["metadata"]["name"])
    return None


def nvidia_device_plugins(api: Any) -> list[DevicePlugin]:
    """Every DaemonSet in the cluster that runs an NVIDIA device plugin image, llmctl's included."""
    found = []
    for ds in _items(api, kind_of("apps/v1", "DaemonSet").path(), "listing DaemonSets"):
        containers = ds.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        images = [str(c.get("image", "")) for c in containers]
        image = next((i for i in images if any(p in i for p in DEVICE_PLUGIN_IMAGES)), None)
        if image is None:
            continue
        meta = ds["metadata"]
        labels = meta.get("labels") or {}
        found.append(
            DevicePlugin(
                namespace=str(meta.get("namespace", "")),
                name=str(meta["name"]),
                image=image,
                by_llmctl=labels.get("app.kubernetes.io/managed-by") == "llmctl",
                ready=int(ds.get("status", {}).get("numberReady", 0) or 0),
            )
        )
    return found


def crd_exists(api: Any, name: str) -> bool:
    path = kind_of("apiextensions.k8s.io/v1", "CustomResourceDefinition").path(name)
    what = f"reading CustomResourceDefinition {name}"
    return get_or_none(api, path, what, PREFLIGHT_RIGHTS) is not None


def cluster_autoscalers(api: Any) -> list[str]:
    """Deployments that run cluster-autoscaler (any namespace, any chart's name for it)."""
    found = []
    for deploy in _items(api, DEPLOYMENTS.path(), "listing Deployments"):
        meta = deploy["metadata"]
        containers = (
            deploy.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        )
        images = " ".join(str(c.get("image", "")) for c in containers)
        if "cluster-autoscaler" in images or "cluster-autoscaler" in meta["name"]:
            found.append(f"{meta.get('namespace', '')}/{meta['name']}")
    return found


def runtime_classes(api: Any) -> dict[str, str]:
    path = kind_of("node.k8s.io/v1", "RuntimeClass").path()
    return {
        str(rc["metadata"]["name"]): str(rc.get("handler", ""))
        for rc in _items(api, path, "listing RuntimeClasses")
    }


def cluster_facts(api: Any) -> ClusterFacts:
    return ClusterFacts(
        default_storage_class=default_storage_class(api),
        device_plugins=tuple(nvidia_device_plugins(api)),
        gpu_operator=crd_exists(api, GPU_OPERATOR_CRD),
        autoscalers=tuple(cluster_autoscalers(api)),
        karpenter=crd_exists(api, KARPENTER_CRD),
        runtime_classes=runtime_classes(api),
    )


@dataclass(frozen=True)
class Check:
    """One preflight finding: what is there or missing, and how to add it."""

    name: str
    ok: bool
    message: str
    fix: str = ""
    # False: scale-from-zero cannot work until this is fixed.
    blocks_scale_from_zero: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "ok": self.ok,
            "message": self.message,
            "fix": self.fix,
            "blocksScaleFromZero": self.blocks_scale_from_zero,
        }


def _foreign_plugins(facts: ClusterFacts) -> list[DevicePlugin]:
    return [p for p in facts.device_plugins if not p.by_llmctl]


def preflight(cloud: catalog.CloudName, facts: ClusterFacts) -> list[Check]:
    """What this cluster has and lacks for llmctl's scale-from-zero GPU pool (pure)."""
    facts_of = catalog.CLOUD_FACTS[cloud]
    checks = []
    if facts.default_storage_class:
        checks.append(
            Check("default StorageClass", True, f"{facts.default_storage_class} is the default")
        )
    else:
        checks.append(
            Check(
                "default StorageClass",
                False,
                "no StorageClass is marked default: the model cache's PersistentVolumeClaims "
                "stay Pending",
                fix='kubectl patch storageclass NAME -p \'{"metadata": {"annotations": '
                f'{{"{DEFAULT_CLASS_ANNOTATION}": "true"}}}}}}\'',
            )
        )
    foreign = _foreign_plugins(facts)
    ours = [p for p in facts.device_plugins if p.by_llmctl]
    if facts_of.needs_device_plugin and ours and (facts.gpu_operator or foreign):
        # Installed after llmctl's (review N14): both would register nvidia.com/gpu on a node.
        who = ", ".join(p.where for p in foreign) or "the NVIDIA GPU Operator"
        checks.append(
            Check(
                "NVIDIA device plugin",
                False,
                f"two device plugins: {who} and llmctl's own "
                f"({', '.join(p.where for p in ours)}) would both register nvidia.com/gpu on "
                "every GPU node",
                fix="; ".join(f"kubectl delete daemonset -n {p.namespace} {p.name}" for p in ours)
                + " (llmctl's; the other one stays and llmctl applies no new one)",
                blocks_scale_from_zero=True,
            )
        )
    elif facts_of.needs_device_plugin:
        if facts.gpu_operator or foreign:
            who = ", ".join(p.where for p in foreign) or "the NVIDIA GPU Operator"
            checks.append(
                Check(
                    "NVIDIA device plugin",
                    True,
                    f"already runs ({who}): llmctl does not apply a second one, which would "
                    "fight it for nvidia.com/gpu",
                )
            )
        elif ours:
            checks.append(
                Check(
                    "NVIDIA device plugin",
                    True,
                    f"llmctl's runs ({', '.join(p.where for p in ours)}); llmctl keeps it applied",
                )
            )
        else:
            checks.append(
                Check("NVIDIA device plugin", True, "none yet: llmctl applies its DaemonSet")
            )
    elif foreign and any("k8s-device-plugin" in p.image for p in foreign):
        checks.append(
            Check(
                "NVIDIA device plugin",
                False,
                f"{', '.join(p.where for p in foreign)} runs NVIDIA's plugin beside "
                f"{facts_of.display}'s own: both register nvidia.com/gpu",
                fix="remove the extra plugin; " + facts_of.device_plugin_reason,
            )
        )
    else:
        checks.append(Check("NVIDIA device plugin", True, facts_of.device_plugin_reason))
    if cloud is catalog.CloudName.AWS:
        checks.append(_autoscaler_check(facts))
    handler = facts.runtime_classes.get("nvidia")
    if not facts_of.nvidia_runtime_handler:
        if handler == "nvidia":
            checks.append(
                Check(
                    "RuntimeClass nvidia",
                    False,
                    f"exists, but {facts_of.display} nodes have no `nvidia` containerd handler "
                    "(pods using it fail at sandbox creation)",
                    fix="kubectl delete runtimeclass nvidia (if nothing else needs it); "
                    + facts_of.runtime_reason,
                )
            )
        else:
            checks.append(
                Check("RuntimeClass nvidia", True, "not applied: " + facts_of.runtime_reason)
            )
    else:
        checks.append(Check("RuntimeClass nvidia", True, facts_of.runtime_reason))
    return checks


def _autoscaler_check(facts: ClusterFacts) -> Check:
    name = "node autoscaler"
    if facts.autoscalers:
        return Check(
            name,
            True,
            f"cluster-autoscaler runs ({', '.join(facts.autoscalers)}); it needs ASG "
            "auto-discovery and eks:DescribeNodegroup to scale the group from zero",
        )
    if facts.karpenter:
        return Check(
            name,
            False,
            "Karpenter (or EKS Auto Mode) runs but no cluster-autoscaler: Karpenter does not "
            "scale managed node groups, so this group stays at zero",
            fix="use a Karpenter NodePool for the GPU nodes instead (docs/gpu.md shows one), "
            "or install cluster-autoscaler",
            blocks_scale_from_zero=True,
        )
    return Check(
        name,
        False,
        "no cluster-autoscaler Deployment: EKS does not scale a managed node group from zero "
        "on its own",
        fix="install cluster-autoscaler 1.24+ with --node-group-auto-discovery="
        "asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/CLUSTER and "
        "eks:DescribeNodegroup in its IAM policy (docs/gpu.md)",
        blocks_scale_from_zero=True,
    )


def setup_objects(
    cloud: catalog.CloudName, objects: list[dict[str, Any]], facts: ClusterFacts | None
) -> list[dict[str, Any]]:
    """The GPU objects llmctl should apply here: no RuntimeClass where the nodes have no such
    handler, no device plugin where one (or the GPU Operator) already runs."""
    facts_of = catalog.CLOUD_FACTS[cloud]
    keep = []
    for obj in objects:
        if obj["kind"] == "RuntimeClass" and not facts_of.nvidia_runtime_handler:
            continue
        if (
            obj["kind"] == "DaemonSet"
            and facts is not None
            and (facts.gpu_operator or _foreign_plugins(facts))
        ):
            continue
        keep.append(obj)
    return keep


def cluster_blockers(
    cloud: catalog.CloudName, facts: ClusterFacts, managed_plugin: bool = False
) -> list[str]:
    """Why the cluster would not bring a GPU node up from zero and use it (empty: it would).
    `managed_plugin`: the cloud runs the device plugin on the pool's nodes itself."""
    reasons = [c.message for c in preflight(cloud, facts) if c.blocks_scale_from_zero]
    needs_plugin = catalog.CLOUD_FACTS[cloud].needs_device_plugin and not managed_plugin
    if needs_plugin and not (facts.gpu_operator or facts.device_plugins):
        reasons.append(
            "no NVIDIA device plugin DaemonSet: a new GPU node would offer no nvidia.com/gpu "
            "(run `llmctl gpu enable` without --skip-cluster-setup)"
        )
    return reasons
