"""The CPU nodes the CPU tier and the router need: each cloud's allocatable by its published
formula, and the pods packed onto it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmctl.catalog import CloudName
from llmctl.config import Stack
from llmctl.cost import fit
from llmctl.cost.fit import MIB, Allocatable, PodRequest


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("1500m", Decimal("1.5")),
        ("0.5", Decimal("0.5")),
        ("128Mi", Decimal(128 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("1G", Decimal(10**9)),
        ("2k", Decimal(2000)),
    ],
)
def test_quantities_read_as_kubernetes_reads_them(text: str, value: Decimal) -> None:
    assert fit.quantity(text) == value


@pytest.mark.parametrize(
    ("cloud", "instance", "millicores", "memory_mib", "pods"),
    [
        # EKS: 2000m - (60 + 10) reserved; 2048Mi - (255 + 11 x 11 pods) - 100 eviction.
        (CloudName.AWS, "t3.small", 1930, 1572, 11),
        (CloudName.AWS, "g4dn.xlarge", 3920, 16384 - (255 + 11 * 29) - 100, 29),
        # AKS: 100m for 2 cores, 140m for 4; memory 25% (under 20Mi x 250 pods + 50Mi) + 100Mi.
        (CloudName.AZURE, "Standard_B2s", 1900, 4096 - 1024 - 100, 250),
        (CloudName.AZURE, "Standard_NC4as_T4_v3", 3860, 28672 - 5050 - 100, 250),
        # GKE: the 4-core example of plan-node-sizes shows cpu 3920m; memory 25% of the first
        # 4 GiB, 20% of the next 4, 10% of the rest up to 16.
        (CloudName.GCP, "e2-standard-2", 1930, 8192 - 1024 - 819.2 - 100, 110),
        (CloudName.GCP, "n1-standard-4", 3920, 15360 - 1024 - 819.2 - 716.8 - 100, 110),
    ],
)
def test_allocatable_by_each_clouds_formula(
    cloud: CloudName, instance: str, millicores: int, memory_mib: float, pods: int
) -> None:
    node = fit.allocatable(cloud, instance)
    assert node.millicores == millicores and node.pods == pods
    assert abs(node.memory_bytes / MIB - memory_mib) < 1


def test_the_default_stack_puts_four_pods_on_cpu_nodes() -> None:
    pods = fit.cpu_tier_pods(Stack())
    assert sorted((p.name, p.millicores, p.memory_bytes // MIB) for p in pods) == [
        ("cpu-llm-server", 1000, 1024),
        ("cpu-llm-server", 1000, 1024),
        ("llm-router", 100, 128),
        ("llm-router", 100, 128),
    ]


@pytest.mark.parametrize("cloud", list(CloudName))
def test_the_default_cpu_tier_needs_two_default_cpu_nodes(cloud: CloudName) -> None:
    """Two 1-CPU llama-servers cannot share a 2-vCPU node once the kubelet's share is taken."""
    from llmctl.catalog import DEFAULT_CPU_INSTANCE_TYPES

    node = fit.allocatable(cloud, DEFAULT_CPU_INSTANCE_TYPES[cloud])
    assert fit.nodes_needed(fit.cpu_tier_pods(Stack()), node) == 2


def test_one_cpu_replica_fits_one_node_beside_both_routers() -> None:
    stack = Stack.model_validate({"cpu": {"replicas": 1}})
    node = fit.allocatable(CloudName.AWS, "t3.small")
    assert fit.nodes_needed(fit.cpu_tier_pods(stack), node) == 1


def test_pod_slots_count_as_much_as_cpu_and_memory() -> None:
    node = Allocatable(millicores=100_000, memory_bytes=100 * 1024 * MIB, pods=11)
    tiny = [PodRequest("p", 1, 1)] * 12
    assert fit.nodes_needed(tiny, node) == 2
    assert fit.nodes_needed(tiny[:11], node) == 1


def test_memory_alone_can_need_another_node() -> None:
    node = Allocatable(millicores=100_000, memory_bytes=1000 * MIB, pods=110)
    assert fit.nodes_needed([PodRequest("p", 1, 600 * MIB)] * 2, node) == 2
    assert fit.nodes_needed([PodRequest("p", 1, 500 * MIB)] * 2, node) == 1


def test_largest_first_fills_the_gaps_with_small_pods() -> None:
    node = Allocatable(millicores=1000, memory_bytes=10 * 1024 * MIB, pods=110)
    pods = [PodRequest("s", 300, 1)] * 2 + [PodRequest("l", 700, 1)] * 2
    assert fit.nodes_needed(pods, node) == 2  # in arrival order first fit would need 3


def test_a_pod_larger_than_an_empty_node_is_refused() -> None:
    node = fit.allocatable(CloudName.AWS, "t3.small")
    big = PodRequest("cpu-llm-server", 2000, 1024 * MIB)
    with pytest.raises(fit.DoesNotFit, match="requests 2000m CPU and 1024Mi memory") as info:
        fit.nodes_needed([big], node, "t3.small")
    assert "than an empty t3.small offers (1930m CPU and 1572Mi memory allocatable)" in str(
        info.value
    )
    with pytest.raises(fit.DoesNotFit):
        fit.nodes_needed([PodRequest("p", 1, 2048 * MIB)], node)


@pytest.mark.parametrize("cloud", list(CloudName))
def test_every_catalog_instance_type_has_an_allocatable(cloud: CloudName) -> None:
    """`--instance-type` accepts any type the catalog lists: each must have a pod limit and
    leave room for pods."""
    from llmctl.catalog import INSTANCE_TYPES

    for name, instance in INSTANCE_TYPES[cloud].items():
        node = fit.allocatable(cloud, name)
        assert 0 < node.millicores < instance.vcpus * 1000, name
        assert 0 < node.memory_bytes < instance.memory_gib * 1024 * MIB, name
        assert node.pods >= 11, name


@pytest.mark.parametrize("cloud", list(CloudName))
def test_each_tiers_memory_limit_fits_its_default_nodes_allocatable(cloud: CloudName) -> None:
    """Issue 28 asked whether the GPU pod's 12Gi limit exceeds n1-standard-4's allocatable and
    the CPU pod's 1536Mi t3.small's: by each cloud's reserve formula, neither does."""
    from llmctl import catalog

    stack = Stack()
    for tier, instances in (
        (stack.gpu, catalog.DEFAULT_GPU_INSTANCE_TYPES),
        (stack.cpu, catalog.DEFAULT_CPU_INSTANCE_TYPES),
    ):
        node = fit.allocatable(cloud, instances[cloud])
        limit = fit.quantity(tier.resources.limits.memory or "0")
        assert limit <= node.memory_bytes, (cloud, instances[cloud], limit, node)
    gke = fit.allocatable(CloudName.GCP, "n1-standard-4")
    assert gke.memory_bytes // MIB == 12700
