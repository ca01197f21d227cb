"""The Stack: llmctl's whole configuration as a pydantic model, and what each part allows.

Reading it from files, the environment and flags is `config/sources.py`'s job.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from llmctl import catalog
from llmctl.catalog import CloudName
from llmctl.config.router_settings import BudgetStore, GpuWait, KeyPolicy, check_key_policies


def _quantity_text(value: object) -> object:
    """YAML and `--set` read `cpu: 2` as a number, as Kubernetes accepts it: keep its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"),
]
ImageRef = Annotated[str, Field(pattern=r"^[a-z0-9.\-/:_]+(@sha256:[a-f0-9]{64})?$")]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class CloudConfig(StrictModel):
    region: str = Field(min_length=1)
    cluster: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,99}$")
    resource_group: str | None = Field(None, alias="resourceGroup")
    project: str | None = None


class Clouds(StrictModel):
    aws: CloudConfig = CloudConfig(region="us-east-1", cluster="llm-aws")
    azure: CloudConfig = CloudConfig(region="eastus", cluster="llm-azure", resource_group="llm-rg")
    gcp: CloudConfig = CloudConfig(region="us-central1", cluster="llm-gcp")

    def of(self, cloud: CloudName) -> CloudConfig:
        config: CloudConfig = getattr(self, cloud.value)
        return config


ModelVolume = Literal["local", "ephemeral"]


class ModelSpec(StrictModel):
    """A GGUF file served by one llama.cpp tier."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$", max_length=63)
    uri: str = Field(pattern=r"^https?://\S+$")
    path: str = Field(pattern=r"^/\S+\.gguf$")
    storage_size: Quantity = Field(alias="storageSize")
    # The StorageClass of each pod's own model volume; None uses the cluster's default class,
    # which EKS clusters created at 1.30 or later do not have (`llmctl render` warns).
    storage_class_name: str | None = Field(
        None, alias="storageClassName", pattern=r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?$"
    )
    # When set, the download is checked against it before the server may start.
    sha256: str | None = Field(None, pattern=r"^[a-f0-9]{64}$")
    # Where each pod keeps its copy (docs/deploy.md, "Model storage"): `local`, an emptyDir of
    # storageSize on the node's own disk (the NVMe instance store, local SSD or ephemeral OS
    # disk that `llmctl gpu enable` gives the GPU pool), or `ephemeral`, a generic ephemeral
    # volume (a network disk of storageClassName made with the pod). Unset: the tier's default,
    # `local` for the GPU tier, `ephemeral` for the CPU tier, whose nodes llmctl does not make.
    volume: ModelVolume | None = None
    parameters: int = Field(gt=0)
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_catalog(cls, name: str, storage_size: str) -> ModelSpec:
        info = catalog.MODELS[name]
        return cls(
            name=info.name,
            uri=info.uri,
            path=f"/models/{info.filename}",
            storage_size=storage_size,
            sha256=info.sha256,
            parameters=info.parameters,
            aliases=info.aliases,
        )


class LlamaCpp(StrictModel):
    """llama-server settings. Context is sized per request, then multiplied by the slots.

    llama.cpp splits `ctx_size` evenly between its `parallel` slots (4096 with 8 slots leaves each
    request 512 tokens), unless the KV cache is unified, where any one slot may use all of it.
    Left unset, ctx_size is ctx_per_request x parallel. Set smaller, the cache is unified (unless
    kv_unified is false) so one request can still use ctx_per_request tokens of the shared pool.
    """

    ngl: int = Field(ge=-1, description="layers offloaded to the GPU; -1 means all")
    flash_attn: bool
    ctx_per_request: int = Field(ge=256, le=1_048_576)
    ctx_size: int | None = Field(None, ge=256, description="default: ctx_per_request * parallel")
    parallel: int = Field(ge=1, le=256)
    threads: int | None = Field(None, ge=1, le=512)
    kv_unified: bool | None = Field(None, description="default: only when slots would be short")
    # llama-server --device: naming the GPU (CUDA0) makes a server that cannot use it exit at
    # once instead of silently running every layer on the CPU.
    device: str | None = Field(None, pattern=r"^[A-Za-z0-9_,]+$")

    @property
    def effective_ctx_size(self) -> int:
        return self.ctx_size if self.ctx_size is not None else self.ctx_per_request * self.parallel

    @property
    def unified(self) -> bool:
        if self.kv_unified is not None:
            return self.kv_unified
        return self.effective_ctx_size // self.parallel < self.ctx_per_request

    @property
    def ctx_per_slot(self) -> int:
        if self.unified:
            return self.effective_ctx_size
        return self.effective_ctx_size // self.parallel

    @model_validator(mode="after")
    def _slots_hold_one_request(self) -> Self:
        if self.ctx_per_slot < self.ctx_per_request:
            layout = "unified" if self.unified else f"split over {self.parallel} parallel slots"
            # A unified cache lets one request use all of it: ctx_per_request is enough there.
            minimum = self.ctx_per_request * (1 if self.unified else self.parallel)
            raise ValueError(
                f"ctx_size {self.effective_ctx_size} {layout} leaves {self.ctx_per_slot} tokens "
                f"per request, less than ctx_per_request {self.ctx_per_request}; raise ctx_size "
                f"to at least {minimum} (or leave it unset), lower "
                "parallel or ctx_per_request"
                + ("" if self.unified else ", or drop kv_unified: false")
            )
        return self


class ResourceList(StrictModel):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(StrictModel):
    requests: ResourceList
    limits: ResourceList


class CpuTier(StrictModel):
    # The CPU nodes are the cluster's own, with whatever root disk they have: a network disk of
    # storageSize per pod is the one size llmctl can promise there.
    DEFAULT_MODEL_VOLUME: ClassVar[ModelVolume] = "ephemeral"

    # Two, each with its own model volume, behind a PodDisruptionBudget: one pod restarting,
    # drained or rescheduled leaves the other serving.
    replicas: int = Field(2, ge=0, le=100)
    model: ModelSpec = ModelSpec.from_catalog(catalog.CPU_DEFAULT_MODEL, "2Gi")
    llamacpp: LlamaCpp = LlamaCpp(ngl=0, flash_attn=False, ctx_per_request=2048, parallel=2)
    resources: Resources = Resources(
        # Fits a 2-vCPU, 2 GiB spot node (t3.small, B2s, e2-standard-2) beside the router and
        # the node's own daemons: TinyLlama Q4_K_M needs about 0.7 GiB plus its KV cache.
        requests=ResourceList(cpu="1", memory="1Gi"),
        limits=ResourceList(memory="1536Mi"),
    )

    @property
    def model_volume(self) -> ModelVolume:
        """Where the tier's pods keep the model: `model.volume`, or the tier's default."""
        return self.model.volume or self.DEFAULT_MODEL_VOLUME


class InstanceTypes(StrictModel):
    aws: str = catalog.DEFAULT_GPU_INSTANCE_TYPES[CloudName.AWS]
    azure: str = catalog.DEFAULT_GPU_INSTANCE_TYPES[CloudName.AZURE]
    gcp: str = catalog.DEFAULT_GPU_INSTANCE_TYPES[CloudName.GCP]

    def of(self, cloud: CloudName) -> str:
        name: str = getattr(self, cloud.value)
        return name

    @model_validator(mode="after")
    def _known_gpu_types(self) -> Self:
        for cloud in catalog.CLOUDS:
            name = self.of(cloud)
            if name not in catalog.gpu_instance_types(cloud):
                allowed = ", ".join(catalog.gpu_instance_types(cloud))
                raise ValueError(
                    f"unknown {cloud.value} GPU instance type {name!r}; allowed: {allowed}"
                )
        return self


class GpuTier(StrictModel):
    # `llmctl gpu enable` gives every GPU pool a local disk for the kubelet's ephemeral storage
    # (issue 30): the model is fetched onto it, not onto a network disk attached at pod start.
    DEFAULT_MODEL_VOLUME: ClassVar[ModelVolume] = "local"

    enabled: bool = False
    resource_name: str = Field(
        "nvidia.com/gpu", alias="resourceName", pattern=r"^[a-z0-9.\-]+/[a-z0-9.\-]+$"
    )
    count: int = Field(1, ge=1, le=8)
    min_replicas: int = Field(0, alias="minReplicas", ge=0)
    max_replicas: int = Field(2, alias="maxReplicas", ge=1, le=100)
    instance_types: InstanceTypes = Field(InstanceTypes(), alias="instanceTypes")
    model: ModelSpec = ModelSpec.from_catalog(catalog.GPU_DEFAULT_MODEL, "10Gi")
    llamacpp: LlamaCpp = LlamaCpp(
        ngl=-1, flash_attn=True, ctx_per_request=2048, parallel=4, device="CUDA0"
    )
    resources: Resources = Resources(
        # With every layer on the GPU llama.cpp needs about one core. 4-vCPU GPU nodes keep about
        # 3.9 allocatable, less after the node's daemons: 3 CPUs might not fit beside them.
        requests=ResourceList(cpu="1500m", memory="8Gi"),
        limits=ResourceList(memory="12Gi"),
    )

    # KEDA: how long an idle GPU stays warm before the tier scales to zero. Replicas follow
    # queueing only (requests in flight or waiting, `llamacpp.parallel` per replica): GPU
    # utilisation is not a trigger, since one decoding stream keeps a T4 near 100% busy
    # (docs/deploy.md, "Scaling").
    idle_timeout_seconds: int = Field(300, alias="idleTimeoutSeconds", ge=0, le=86_400)
    # The GPU replicas while KEDA cannot read its metric (Prometheus unreachable, a wrong URL).
    # 0 fails closed: the tier goes to zero after the cooldown and stays there. N > 0 is KEDA's
    # fallback: after 3 failed polls the tier runs N replicas (woken from zero) until the metric
    # is back, availability over cost.
    metrics_failure_replicas: int = Field(0, alias="metricsFailureReplicas", ge=0, le=100)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}"
            )
        if self.metrics_failure_replicas > self.max_replicas:
            raise ValueError(
                f"metricsFailureReplicas {self.metrics_failure_replicas} is above maxReplicas "
                f"{self.max_replicas}"
            )
        return self

    @property
    def model_volume(self) -> ModelVolume:
        """Where the tier's pods keep the model: `model.volume`, or the tier's default."""
        return self.model.volume or self.DEFAULT_MODEL_VOLUME

    def gpu_of(self, cloud: CloudName) -> catalog.GpuInfo:
        instance = catalog.INSTANCE_TYPES[cloud][self.instance_types.of(cloud)]
        assert instance.gpu is not None  # InstanceTypes only admits GPU types
        return catalog.GPUS[instance.gpu]


DEFAULT_ROUTER_IMAGE = "ghcr.io/llmctl/llm-router:0.1.0"


class Images(StrictModel):
    # llama.cpp's official server images, pinned to the release whose `--help` is in
    # tests/data/llama-server-help.txt: the rendered flags are checked against that list.
    llama_server: ImageRef = Field("ghcr.io/ggml-org/llama.cpp:server-b11312", alias="llamaServer")
    llama_server_cuda: ImageRef = Field(
        "ghcr.io/ggml-org/llama.cpp:server-cuda-b11312", alias="llamaServerCuda"
    )
    # The router image as this project's release workflow publishes it. Build and push your own
    # (README, "The router image") and set this: `llmctl render` warns while it is the default.
    router: ImageRef = DEFAULT_ROUTER_IMAGE
    # The image of the llama.cpp pods' model download (init container `fetch-model`); unset, the
    # router image above, which is llama.cpp's server image (it carries curl) plus the router:
    # nothing from Docker Hub, and its base layers are those the llama-server container pulls.
    model_fetcher: ImageRef | None = Field(None, alias="modelFetcher")
    device_plugin: ImageRef = Field(
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", alias="devicePlugin"
    )
    dcgm_exporter: ImageRef = Field(
        "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04", alias="dcgmExporter"
    )


SecretName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]


class ModelDownload(StrictModel):
    """How the llama.cpp pods download their model. The token is read from an optional Secret:
    the pods start without it, and public models need none."""

    # A Secret in the namespace whose `token_key` holds a Hugging Face token (HF_TOKEN), sent
    # as a Bearer token for gated models.
    token_secret: SecretName = Field("hf-token", alias="tokenSecret")
    token_key: str = Field("token", alias="tokenKey", pattern=r"^[-._a-zA-Z0-9]+$")


PublicUrl = Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]+)?/?$")]


class ExposeTls(StrictModel):
    # The Secret holding the certificate (kubernetes.io/tls) for the cloud's router host.
    secret_name: SecretName = Field("llm-router-tls", alias="secretName")
    # With cert-manager: the ClusterIssuer that fills that Secret (an Ingress annotation).
    cluster_issuer: str | None = Field(None, alias="clusterIssuer")


class GatewayRef(StrictModel):
    """The Gateway (Gateway API) an HTTPRoute attaches to; its HTTPS listener holds the TLS."""

    name: str = Field("llm-gateway", min_length=1)
    namespace: str | None = None
    section_name: str | None = Field(None, alias="sectionName")


class Expose(StrictModel):
    """The router outside its cluster, at the cloud's federation.routerUrls host. Exposed, the
    router requires API keys: router.apiKeys.secretName must be set."""

    enabled: bool = False
    kind: Literal["ingress", "httproute"] = "ingress"
    ingress_class_name: str = Field("nginx", alias="ingressClassName")
    gateway: GatewayRef = GatewayRef()
    tls: ExposeTls = ExposeTls()


class ApiKeySecret(StrictModel):
    """A Secret in the namespace whose key holds the router's API keys, comma-separated; with
    named keys (`keys`), each entry is `name:secret`. Only the Secret's name reaches the
    rendered files: the router pod reads its value from the environment."""

    secret_name: str | None = Field(
        None, alias="secretName", pattern=r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?$"
    )
    key: str = Field("api-keys", pattern=r"^[-._a-zA-Z0-9]+$")
    # Named keys with their tiers, GPU budgets, rate limits and GPU waits (issue 31; the
    # router's own classes, config/router_settings.py), and where the budgets are counted.
    keys: tuple[KeyPolicy, ...] = ()
    budget_store: BudgetStore | None = Field(None, alias="budgetStore")

    @model_validator(mode="after")
    def _keys_have_secrets_and_a_store(self) -> Self:
        check_key_policies(
            self.keys,
            self.budget_store,
            has_secrets=self.secret_name is not None,
            secrets_setting="router.apiKeys.secretName",
            budget_setting="router.apiKeys.budgetStore",
            budget_hint=(
                "set router.apiKeys.budgetStore.prometheusUrl to the Prometheus that scrapes the "
                "routers, usually observability.prometheusUrl, and its matchers to "
                f"'namespace=\"{catalog.NAMESPACE}\"' when that Prometheus is shared"
            ),
        )
        return self


class Router(StrictModel):
    replicas: int = Field(2, ge=1, le=100)
    # Unset, the router answers anyone who can reach its Service (`llmctl render` warns).
    api_keys: ApiKeySecret = Field(ApiKeySecret(), alias="apiKeys")
    resources: Resources = Resources(
        requests=ResourceList(cpu="100m", memory="128Mi"),
        limits=ResourceList(memory="256Mi"),
    )
    expose: Expose = Expose()
    # Waiting for a GPU instead of the CPU fallback (issue 31; docs/router.md, "Waiting for a
    # GPU"): router.yaml's gpuWait, the router's own class (config/router_settings.py).
    gpu_wait: GpuWait = Field(GpuWait(), alias="gpuWait")


class RouterUrls(StrictModel):
    aws: PublicUrl | None = None
    azure: PublicUrl | None = None
    gcp: PublicUrl | None = None

    def of(self, cloud: CloudName) -> str | None:
        url: str | None = getattr(self, cloud.value)
        return url


class Federation(StrictModel):
    """One router across the clouds (issue 16): each cloud's router lists the other clouds'
    routers as peers and sends them GPU requests when its own GPU tier is asleep."""

    enabled: bool = False
    # Each cloud's public router URL: where the other clouds' routers reach it.
    router_urls: RouterUrls = Field(RouterUrls(), alias="routerUrls")
    # The Secret (key `peer-key`) in every cluster, holding the same key: peers authenticate
    # with it, never with a client API key. The router reads it from LLM_ROUTER_PEER_KEY.
    peer_key_secret: SecretName = Field("llm-router-peer-key", alias="peerKeySecret")
    # A GPU request a peer serves still counts in the local GPU demand, so the local pool wakes.
    count_peer_served_demand: bool = Field(True, alias="countPeerServedDemand")


class Observability(StrictModel):
    """Where the cluster's Prometheus (Prometheus Operator) lives."""

    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring.svc:9090",
        alias="prometheusUrl",
        pattern=r"^https?://\S+$",
    )
    # Its pods may scrape llama.cpp's /metrics through the llama servers' NetworkPolicies.
    prometheus_namespace: str = Field("monitoring", alias="prometheusNamespace")
    # Labels Prometheus selects ServiceMonitors, PodMonitors and PrometheusRules by
    # (kube-prometheus-stack selects its own release label by default).
    monitor_labels: dict[str, str] = Field(
        {"release": "kube-prometheus-stack"}, alias="monitorLabels"
    )


DnsName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.\-]{0,251}[a-z0-9])?$")]


BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")]


class AwsModelStore(StrictModel):
    """An S3 bucket in clouds.aws.region. The llama pods read it through EKS Pod Identity (an
    association for their service account) or IRSA (roleArn)."""

    bucket: BucketName
    role_arn: str | None = Field(
        None, alias="roleArn", pattern=r"^arn:aws[a-z\-]*:iam::[0-9]{12}:role/[\w+=,.@/\-]+$"
    )


class GcpModelStore(StrictModel):
    """A GCS bucket in clouds.gcp.region, read through GKE Workload Identity: either the
    pods' Kubernetes service account is granted on the bucket itself (no setting), or it acts
    as a Google service account (serviceAccount)."""

    bucket: BucketName
    service_account: str | None = Field(
        None,
        alias="serviceAccount",
        pattern=r"^[a-z0-9\-]+@[a-z0-9\-]+\.iam\.gserviceaccount\.com$",
    )


class AzureModelStore(StrictModel):
    """A Blob container in a storage account of clouds.azure.region, read through AKS Workload
    Identity as the managed identity (or app) whose client ID is clientId."""

    account: str = Field(pattern=r"^[a-z0-9]{3,24}$")
    container: str = Field(pattern=r"^[a-z0-9](-?[a-z0-9])+$", min_length=3, max_length=63)
    client_id: str | None = Field(
        None,
        alias="clientId",
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    )


class ModelStore(StrictModel):
    """Issue 30: where each cloud keeps its copy of the models (`llmctl model push`). Unset for
    a cloud, its llama pods download from the model's uri (the Hugging Face Hub)."""

    aws: AwsModelStore | None = None
    azure: AzureModelStore | None = None
    gcp: GcpModelStore | None = None

    def of(self, cloud: CloudName) -> AwsModelStore | AzureModelStore | GcpModelStore | None:
        store: AwsModelStore | AzureModelStore | GcpModelStore | None = getattr(self, cloud.value)
        return store


class Stack(StrictModel):
    clouds: Clouds = Clouds()
    images: Images = Images()
    model_download: ModelDownload = Field(ModelDownload(), alias="modelDownload")
    # Secrets in the namespace for pulling llmctl's pods' images from a private registry.
    image_pull_secrets: tuple[DnsName, ...] = Field((), alias="imagePullSecrets")
    router: Router = Router()
    cpu: CpuTier = CpuTier()
    gpu: GpuTier = GpuTier()
    observability: Observability = Observability()
    federation: Federation = Federation()
    model_store: ModelStore = Field(ModelStore(), alias="modelStore")

    @model_validator(mode="after")
    def _federation_has_what_it_needs(self) -> Self:
        needs_urls = self.federation.enabled or self.router.expose.enabled
        missing = [c.value for c in catalog.CLOUDS if self.federation.router_urls.of(c) is None]
        if needs_urls and missing:
            what = "federation" if self.federation.enabled else "router.expose"
            raise ValueError(
                f"{what} needs every cloud's public router URL: set federation.routerUrls."
                f"{', federation.routerUrls.'.join(missing)}"
            )
        if self.router.expose.enabled and self.router.api_keys.secret_name is None:
            raise ValueError(
                "an exposed router requires API keys: set router.apiKeys.secretName (a Secret "
                "whose key router.apiKeys.key holds the keys, comma-separated)"
            )
        if self.federation.enabled and not self.router.expose.enabled:
            raise ValueError(
                "federation needs each router reachable by the others: set "
                "router.expose.enabled: true (an Ingress or a Gateway API HTTPRoute)"
            )
        return self
