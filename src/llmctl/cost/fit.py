"""How many CPU nodes the CPU tier and the router need: their pods' requests packed onto the
instance type's allocatable CPU, memory and pod slots, as the scheduler must place them.

Allocatable is the instance's nominal size less what each managed Kubernetes reserves for the
kubelet, the runtime and eviction, by the formula each cloud publishes (sources by the figures).
It leaves out what the cloud's own DaemonSets and add-ons (CNI, kube-proxy, CoreDNS) request, and
the kernel's share of memory, so the count is a lower bound: a real cluster needs at least this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config import Stack

MIB = 1024 * 1024
GIB = 1024 * MIB
EVICTION_HARD_BYTES = 100 * MIB  # the kubelet's memory.available<100Mi, on all three clouds

_SUFFIXES = {
    "m": Decimal("0.001"),
    "k": Decimal(1000),
    "M": Decimal(1000**2),
    "G": Decimal(1000**3),
    "T": Decimal(1000**4),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
}


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity as config.Quantity allows it ("1", "1500m", "1Gi") as a number."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(text)


@dataclass(frozen=True)
class PodRequest:
    """What one pod asks the scheduler for: millicores and bytes."""

    name: str
    millicores: int
    memory_bytes: int


@dataclass(frozen=True)
class Allocatable:
    millicores: int
    memory_bytes: int
    pods: int


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...], rest: float) -> float:
    """A reservation charged by bands: each (width, share) band of `amount` in turn, then
    `rest` as the share of what is left above the last band."""
    reserved, left = 0.0, amount
    for width, share in tiers:
        band = min(left, width)
        reserved += band * share
        left -= band
    return reserved + max(left, 0.0) * rest


# CPU reserved for the kubelet and runtime: 6% of the first core, 1% of the second, 0.5% of the
# third and fourth, 0.25% of each above. GKE: cloud.google.com/kubernetes-engine/docs/concepts/
# plan-node-sizes#memory_and_cpu_reservations; EKS: the same bands in amazon-eks-ami's
# bootstrap (get_cpu_millicores_to_reserve).
_CPU_BANDS = ((1000.0, 0.06), (1000.0, 0.01), (2000.0, 0.005))
_CPU_REST = 0.0025

# AKS reserves CPU by core count (learn.microsoft.com/azure/aks/node-resource-reservations).
_AKS_CPU_MILLICORES = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}

# GKE reserves 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112
# and 2% above 128 GiB (plan-node-sizes, as above).
_GKE_MEMORY_BANDS = ((4.0 * GIB, 0.25), (4.0 * GIB, 0.20), (8.0 * GIB, 0.10), (112.0 * GIB, 0.06))
_GKE_MEMORY_REST = 0.02

# EKS's max pods per instance type with the VPC CNI (no prefix delegation): ENIs x (IPv4
# addresses per ENI - 1) + 2, as amazon-eks-ami's eni-max-pods.txt lists them.
EKS_MAX_PODS = {
    "t3.small": 11,
    "t3.medium": 17,
    "g4dn.xlarge": 29,
    "g4dn.2xlarge": 29,
    "g5.xlarge": 58,
}
AKS_MAX_PODS = 250  # the default with Azure CNI Overlay, AKS's default network plugin
GKE_MAX_PODS = 110  # GKE Standard's default per node


def allocatable(cloud: CloudName, instance_type: str) -> Allocatable:
    """What pods can request on one node of `instance_type` in the cloud's managed Kubernetes."""
    instance = catalog.INSTANCE_TYPES[cloud][instance_type]
    cores = instance.vcpus
    memory = instance.memory_gib * GIB
    if cloud is CloudName.AZURE:
        cpu_reserved = float(_AKS_CPU_MILLICORES[min(k for k in _AKS_CPU_MILLICORES if k >= cores)])
        pods = AKS_MAX_PODS
        # Since Kubernetes 1.29: 20 MiB per allowed pod plus 50 MiB, at most 25% of memory.
        memory_reserved = min(20.0 * MIB * pods + 50.0 * MIB, 0.25 * memory)
    else:
        cpu_reserved = _tiered(cores * 1000.0, _CPU_BANDS, _CPU_REST)
        if cloud is CloudName.AWS:
            pods = EKS_MAX_PODS[instance_type]
            memory_reserved = 255.0 * MIB + 11.0 * MIB * pods  # amazon-eks-ami bootstrap
        else:
            pods = GKE_MAX_PODS
            memory_reserved = _tiered(memory, _GKE_MEMORY_BANDS, _GKE_MEMORY_REST)
    return Allocatable(
        millicores=int(cores * 1000 - cpu_reserved),
        memory_bytes=int(memory - memory_reserved - EVICTION_HARD_BYTES),
        pods=pods,
    )


def cpu_tier_pods(stack: Stack) -> list[PodRequest]:
    """The pods that run on CPU nodes whatever the scenario: the CPU tier's llama-servers and
    the routers, with the requests `llmctl render` gives them."""
    pods: list[PodRequest] = []
    for name, replicas, requests in (
        ("cpu-llm-server", stack.cpu.replicas, stack.cpu.resources.requests),
        ("llm-router", stack.router.replicas, stack.router.resources.requests),
    ):
        millicores = int(quantity(requests.cpu or "0") * 1000)
        memory = int(quantity(requests.memory or "0"))
        pods += [PodRequest(name, millicores, memory)] * replicas
    return pods


class DoesNotFit(ValueError):
    """A pod asks for more than one empty node offers: it would stay Pending."""

    def __init__(self, pod: PodRequest, node: Allocatable, node_name: str) -> None:
        self.pod, self.node = pod, node
        super().__init__(
            f"a {pod.name} pod requests {pod.millicores}m CPU and "
            f"{math.ceil(pod.memory_bytes / MIB)}Mi memory, more than an empty {node_name} "
            f"offers ({node.millicores}m CPU and {node.memory_bytes // MIB}Mi memory "
            "allocatable), so it would never be scheduled"
        )


def nodes_needed(pods: list[PodRequest], node: Allocatable, node_name: str = "node") -> int:
    """The nodes first-fit decreasing packs `pods` onto: largest first, each on the first node
    with room. For the tier's few pods of two sizes that is the fewest nodes that hold them."""
    free: list[list[int]] = []  # per node: millicores, bytes, pod slots left
    for pod in sorted(pods, key=lambda p: (p.millicores, p.memory_bytes), reverse=True):
        if pod.millicores > node.millicores or pod.memory_bytes > node.memory_bytes:
            raise DoesNotFit(pod, node, node_name)
        for left in free:
            if left[0] >= pod.millicores and left[1] >= pod.memory_bytes and left[2] >= 1:
                break
        else:
            left = [node.millicores, node.memory_bytes, node.pods]
            free.append(left)
        left[0] -= pod.millicores
        left[1] -= pod.memory_bytes
        left[2] -= 1
    return max(len(free), 1)
