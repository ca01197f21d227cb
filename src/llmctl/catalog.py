"""Facts about the things llmctl deploys to: models, GPUs, instance types and clouds.

Plain data, no I/O. Configuration refers to these entries by name; the renderer, the planners and
the cloud adapters all read their facts from here, so a fact is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class CloudName(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"


CLOUDS: tuple[CloudName, ...] = tuple(CloudName)

# The namespace every rendered object lives in (a shared name, DESIGN.md section 3). Here, not in
# config/, so that commands can name it without loading pydantic at start-up.
NAMESPACE = "llm-server"


@dataclass(frozen=True)
class ModelInfo:
    """A GGUF model file and the architecture numbers that size its memory."""

    name: str
    uri: str
    filename: str
    parameters: int
    file_bytes: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_embd: int
    ctx_train: int
    quantization: str = "Q4_K_M"
    aliases: tuple[str, ...] = ()
    # For `llmctl plan`'s compute-buffer estimate (llama.cpp sizes it by these): from the headers.
    n_ff: int = 0
    n_vocab: int = 32000
    # The Hub commit the uri is pinned to and the file's sha256 at that commit: the pods check
    # the download against it (issue 28). Every catalog model carries both (a test checks it).
    revision: str = ""
    sha256: str | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_heads


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        # Sizes are the files' byte counts on the Hugging Face hub; shapes from their GGUF headers.
        ModelInfo(
            name="tinyllama-1.1b-chat",
            # Pinned: the Hub's commit 52e7645 (the repository's only commit since 2023-12-31, as
            # a recorded Hub API answer gives it) and the file's sha256 (668,788,096 bytes), as
            # two independent public pins agree: kaito-project/aikit's
            # models/tinyllama-1.1b-chat.yaml (commit 44bf504) and a GPU benchmark that fetches
            # resolve/52e7645.../this file. Not re-hashed from the Hub here (docs/deploy.md).
            uri="https://huggingface.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/resolve/52e7645ba7c309695bec7ac98f4f005b139cf465/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            filename="tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            parameters=1_100_048_384,
            file_bytes=668_788_096,
            n_layers=22,
            n_heads=32,
            n_kv_heads=4,
            n_embd=2048,
            ctx_train=2048,
            aliases=("tinyllama",),
            n_ff=5632,
            revision="52e7645ba7c309695bec7ac98f4f005b139cf465",
            sha256="9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0",
        ),
        ModelInfo(
            name="llama-2-7b-chat",
            # Pinned: the Hub's commit 191239b and the file's sha256 at it (4,081,004,224 bytes),
            # as a public reproducibility record gives them; not re-hashed from the Hub here.
            uri="https://huggingface.co/TheBloke/Llama-2-7B-Chat-GGUF/resolve/191239b3e26b2882fb562ffccdd1cf0f65402adb/llama-2-7b-chat.Q4_K_M.gguf",
            filename="llama-2-7b-chat.Q4_K_M.gguf",
            parameters=6_738_415_616,
            file_bytes=4_081_004_224,
            n_layers=32,
            n_heads=32,
            n_kv_heads=32,
            n_embd=4096,
            ctx_train=4096,
            aliases=("llama-2-7b",),
            n_ff=11008,
            revision="191239b3e26b2882fb562ffccdd1cf0f65402adb",
            sha256="08a5566d61d7cb6b420c3e4387a39e0078e1f2fe5f055f3a03887385304d4bfa",
        ),
        ModelInfo(
            name="llama-2-13b-chat",
            # Pinned: the Hub's commit 4458acc and the file's sha256 (7,865,956,224 bytes), as a
            # recorded Hub API answer for the repository at that commit lists them (the file's
            # `lfs.sha256`), and kaito-project/aikit's models/llama-2-13b-chat.yaml (commit
            # 73075fc) pins the same digest. Not re-hashed from the Hub here (docs/deploy.md).
            uri="https://huggingface.co/TheBloke/Llama-2-13B-chat-GGUF/resolve/4458acc949de0a9914c3eab623904d4fe999050a/llama-2-13b-chat.Q4_K_M.gguf",
            filename="llama-2-13b-chat.Q4_K_M.gguf",
            parameters=13_015_864_320,
            file_bytes=7_865_956_224,
            n_layers=40,
            n_heads=40,
            n_kv_heads=40,
            n_embd=5120,
            ctx_train=4096,
            aliases=("llama-2-13b",),
            n_ff=13824,
            revision="4458acc949de0a9914c3eab623904d4fe999050a",
            sha256="7ddfe27f61bf994542c22aca213c46ecbd8a624cca74abff02a7b5a8c18f787f",
        ),
    )
}


def resolve_model_name(name: str) -> str | None:
    """A catalog model's name from its name or one of its aliases; None when unknown."""
    for info in MODELS.values():
        if name == info.name or name in info.aliases:
            return info.name
    return None


CPU_DEFAULT_MODEL = "tinyllama-1.1b-chat"
GPU_DEFAULT_MODEL = "llama-2-7b-chat"

# The rule users expect: models over 3B parameters, or reasoning and code generation, go to GPU.
GPU_PARAMETER_THRESHOLD = 3_000_000_000
GPU_COMPLEXITIES: tuple[str, ...] = ("reasoning", "code-generation")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int
    label: str  # the value llmctl puts in the `accelerator` node label (GKE's accelerator name)


GIB = 1024**3

GPUS: dict[str, GpuInfo] = {
    g.name: g
    for g in (
        GpuInfo("t4", 16 * GIB, "nvidia-tesla-t4"),
        GpuInfo("l4", 24 * GIB, "nvidia-l4"),
        GpuInfo("a10g", 24 * GIB, "nvidia-a10g"),
        GpuInfo("a100-40gb", 40 * GIB, "nvidia-tesla-a100"),
        GpuInfo("h100", 80 * GIB, "nvidia-h100-80gb"),
    )
}


@dataclass(frozen=True)
class InstanceType:
    name: str
    cloud: CloudName
    vcpus: int
    memory_gib: float
    gpu: str | None = None
    gpu_count: int = 0


INSTANCE_TYPES: dict[CloudName, dict[str, InstanceType]] = {}


def _add(*types: InstanceType) -> None:
    for t in types:
        INSTANCE_TYPES.setdefault(t.cloud, {})[t.name] = t


_add(
    InstanceType("g4dn.xlarge", CloudName.AWS, 4, 16, "t4", 1),
    InstanceType("g4dn.2xlarge", CloudName.AWS, 8, 32, "t4", 1),
    InstanceType("g5.xlarge", CloudName.AWS, 4, 16, "a10g", 1),
    InstanceType("t3.small", CloudName.AWS, 2, 2),
    InstanceType("t3.medium", CloudName.AWS, 2, 4),
    InstanceType("Standard_NC4as_T4_v3", CloudName.AZURE, 4, 28, "t4", 1),
    InstanceType("Standard_NC8as_T4_v3", CloudName.AZURE, 8, 56, "t4", 1),
    InstanceType("Standard_B2s", CloudName.AZURE, 2, 4),
    # On GCP the T4 is attached to an N1 machine; the machine type alone names no GPU.
    InstanceType("n1-standard-4", CloudName.GCP, 4, 15, "t4", 1),
    InstanceType("n1-standard-8", CloudName.GCP, 8, 30, "t4", 1),
    InstanceType("g2-standard-4", CloudName.GCP, 4, 16, "l4", 1),
    InstanceType("e2-standard-2", CloudName.GCP, 2, 8),
)

DEFAULT_GPU_INSTANCE_TYPES: dict[CloudName, str] = {
    CloudName.AWS: "g4dn.xlarge",
    CloudName.AZURE: "Standard_NC4as_T4_v3",
    CloudName.GCP: "n1-standard-4",
}

DEFAULT_CPU_INSTANCE_TYPES: dict[CloudName, str] = {
    CloudName.AWS: "t3.small",
    CloudName.AZURE: "Standard_B2s",
    CloudName.GCP: "e2-standard-2",
}


def gpu_instance_types(cloud: CloudName) -> list[str]:
    return sorted(n for n, t in INSTANCE_TYPES[cloud].items() if t.gpu)


def cloud_of_gpu_instance_type(name: str) -> CloudName | None:
    for cloud, types in INSTANCE_TYPES.items():
        t = types.get(name)
        if t is not None and t.gpu:
            return cloud
    return None


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NoSchedule"


# The taint llmctl puts on its GPU nodes, and the labels it sets on them.
GPU_TAINT = Taint("nvidia.com/gpu", "present")
GPU_NODE_LABEL_COMPUTE = ("compute", "gpu-enabled")
GPU_NODE_ACCELERATOR_LABEL = "llmctl.dev/accelerator"


@dataclass(frozen=True)
class CloudFacts:
    """What a cloud's managed Kubernetes does on its own GPU nodes.

    Differences between clouds are data with their reasons, read by the renderer and the docs,
    rather than `if cloud == ...` scattered through the code.
    """

    name: CloudName
    display: str
    spot_taint: Taint | None
    # Whether the GPU node image registers a containerd runtime handler named `nvidia`.
    nvidia_runtime_handler: bool
    runtime_reason: str
    # Whether llmctl must run NVIDIA's device plugin, or the cloud runs its own.
    needs_device_plugin: bool
    device_plugin_reason: str
    default_region: str
    # Where the node keeps its NVIDIA driver when it is not injected by a container runtime
    # (GKE): node agents such as the DCGM exporter mount it from the host.
    host_driver_dir: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


CLOUD_FACTS: dict[CloudName, CloudFacts] = {
    CloudName.AWS: CloudFacts(
        name=CloudName.AWS,
        display="AWS EKS",
        # EKS managed node groups put no taint on spot nodes; llmctl's own GPU taint is enough.
        spot_taint=None,
        nvidia_runtime_handler=True,
        runtime_reason=(
            "the EKS accelerated AMIs configure containerd with an `nvidia` runtime handler "
            "(nvidia-container-toolkit)"
        ),
        needs_device_plugin=True,
        device_plugin_reason="the EKS accelerated AMIs ship drivers but not the device plugin",
        default_region="us-east-1",
    ),
    CloudName.AZURE: CloudFacts(
        name=CloudName.AZURE,
        display="Azure AKS",
        spot_taint=Taint("kubernetes.azure.com/scalesetpriority", "spot"),
        nvidia_runtime_handler=False,
        runtime_reason=(
            "AKS GPU node images make the NVIDIA runtime containerd's default; no `nvidia` "
            "handler is guaranteed, so pods use the default runtime"
        ),
        needs_device_plugin=True,
        device_plugin_reason="AKS installs GPU drivers but leaves the device plugin to the user",
        default_region="eastus",
    ),
    CloudName.GCP: CloudFacts(
        name=CloudName.GCP,
        display="Google GKE",
        spot_taint=Taint("cloud.google.com/gke-spot", "true"),
        nvidia_runtime_handler=False,
        runtime_reason=(
            "GKE mounts its own driver into GPU containers and registers no `nvidia` runtime "
            "handler"
        ),
        needs_device_plugin=False,
        device_plugin_reason=(
            "GKE runs its own nvidia-gpu-device-plugin on GPU nodes; a second plugin would fight "
            "it for the same devices"
        ),
        host_driver_dir="/home/kubernetes/bin/nvidia",
        default_region="us-central1",
    ),
}


# ---------------------------------------------------------------------------------------------
# GPU node pools (`llmctl gpu enable`): the names and cloud-specific spellings of the facts above.

# The cluster-autoscaler tag prefix that lets it build a node template for a group at size zero
# (what the group's nodes would carry: labels, taints, extended resources).
CLUSTER_AUTOSCALER_NODE_TEMPLATE_TAG = "k8s.io/cluster-autoscaler/node-template"

# The EKS managed node group AMI type with NVIDIA drivers and the container toolkit.
EKS_GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"

# GKE installs the NVIDIA driver itself when asked; this is the version channel llmctl asks for.
# LATEST, not DEFAULT: the pinned CUDA image carries T4 code only as CUDA 12.8 PTX, which needs
# driver R570 or newer, and DEFAULT follows the GKE version and may be older (docs/deploy.md).
GKE_GPU_DRIVER_VERSION = "LATEST"

# Where each cloud's NVIDIA device plugin pods run and how they are labelled, when the cloud runs
# its own (CLOUD_FACTS[...].needs_device_plugin is False); `llmctl gpu status` counts them.
MANAGED_DEVICE_PLUGIN_PODS: dict[CloudName, tuple[str, str]] = {
    CloudName.GCP: ("kube-system", "k8s-app=nvidia-gpu-device-plugin"),
}


def gpu_node_labels(gpu: GpuInfo) -> dict[str, str]:
    """The labels llmctl puts on GPU nodes of this GPU model."""
    key, value = GPU_NODE_LABEL_COMPUTE
    return {key: value, GPU_NODE_ACCELERATOR_LABEL: gpu.label}
