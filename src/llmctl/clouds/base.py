"""The shape every cloud's GPU node pool adapter shares.

Data flows one way: command-line options and the Stack become a `PoolSpec` (pure, in
`Cloud.node_pool_spec`), the spec becomes the exact API requests (pure, `Cloud.create_requests`,
which `--dry-run` prints), and only the adapter methods (`read_pool`, `create_pool`, ...) talk to a
cloud. What a cloud cannot do is a table of reasons on its class (`Cloud.unsupported`), not `if`s
in the commands.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar, Literal

from llmctl import catalog
from llmctl.catalog import CloudName, Taint
from llmctl.clouds.quota import QuotaReport
from llmctl.config import Stack
from llmctl.errors import ConfigError, LlmctlError
from llmctl.extras import install_hint

# Told each status a wait sees ("CREATING", "RUNNING 40%"...), so the CLI can show it.
Progress = Callable[[str], None]

# Without an explicit `--max-nodes`, a pool may grow to at most this many GPU nodes: a typo in a
# config file should not be able to buy dozens of GPUs. `--max-nodes N` lifts it up to MAX_NODES.
SAFE_MAX_NODES = 3
MAX_NODES = 100

# The mark llmctl puts on every pool it creates (EKS nodegroup tag, GKE resource label, AKS agent
# pool tag): one key all three accept (GCE label keys allow no `/` or `.`, Azure tag names no `/`).
# A pool without it was made by someone else: `enable` refuses it, `disable` leaves it alone.
OWNER_KEY = "llmctl-managed-by"
OWNER_VALUE = "llmctl"
# What a node pool's GPU driver is when the cloud installs none (GKE INSTALLATION_DISABLED, AKS
# gpuProfile.driver None): pods get no CUDA, so llmctl's GPU pods would never run there.
NO_DRIVER = "none"


def _ignore(_: str) -> None:
    return None


class Capacity(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"
    PREEMPTIBLE = "preemptible"


class Feature(StrEnum):
    PREEMPTIBLE = "--preemptible"
    ZERO_MAX_NODES = "a maximum of 0 nodes"
    SUBNETS = "--subnet"
    NODE_ROLE = "--node-role"
    ZONES = "--zones"
    SERVICE_ACCOUNT = "--service-account"


@dataclass(frozen=True)
class PoolOptions:
    """What the user asked for on the command line; None means "from the Stack"."""

    cluster: str | None = None
    location: str | None = None
    resource_group: str | None = None
    project: str | None = None
    subscription: str | None = None
    instance_type: str | None = None
    min_nodes: int = 0
    max_nodes: int | None = None
    on_demand: bool = False
    preemptible: bool = False
    subnets: tuple[str, ...] = ()
    node_role: str | None = None
    zones: tuple[str, ...] = ()
    service_account: str | None = None


@dataclass(frozen=True)
class PoolSpec:
    """The GPU node pool llmctl wants, in cloud-neutral terms."""

    cloud: CloudName
    cluster: str
    location: str
    name: str
    instance_type: str
    gpu: str
    accelerator: str
    gpus_per_node: int
    capacity: Capacity
    min_nodes: int
    max_nodes: int
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    gpu_resource: str = "nvidia.com/gpu"
    project: str | None = None
    resource_group: str | None = None
    subscription: str | None = None
    subnets: tuple[str, ...] = ()
    node_role: str | None = None
    # GKE node locations; empty: the cluster's zones that offer the GPU, found at run time.
    zones: tuple[str, ...] = ()
    # GKE node service account; None: the one the cluster's other pools use, read at run time.
    service_account: str | None = None
    # The node's own disk backs the kubelet's ephemeral storage (issue 30), where the GPU pods'
    # `local` model volume (an emptyDir) lives: EKS instance store, GKE local SSD, AKS ephemeral
    # OS disk. Asked for when the GPU tier's model volume is `local` (the default).
    local_disk: bool = False

    @property
    def vcpus_per_node(self) -> int:
        return catalog.INSTANCE_TYPES[self.cloud][self.instance_type].vcpus


@dataclass(frozen=True)
class PoolState:
    """A pool as the cloud reports it, in the same terms as `PoolSpec`."""

    name: str
    instance_type: str
    capacity: str
    min_nodes: int
    # None where the pool API does not count nodes (GKE); the cluster's node list does.
    current_nodes: int | None
    max_nodes: int
    status: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    problems: tuple[str, ...] = ()
    # The node image family where the cloud lets the pool choose one (EKS amiType), else "".
    image: str = ""
    # The cloud installs and runs the NVIDIA device plugin on this pool's nodes itself (AKS
    # managed GPU: gpuProfile.nvidia.managementMode Managed), so llmctl must not add one.
    managed_device_plugin: bool = False
    # What GPU the pool's nodes carry where the pool API names it apart from the machine type
    # (GKE accelerators: an n1-standard-4 has no GPU of its own); None where the instance type
    # alone says (EKS, AKS). "" for a pool with no GPU.
    accelerator: str | None = None
    gpus_per_node: int | None = None
    # The GPU driver the cloud installs (GKE gpuDriverVersion, AKS gpuProfile.driver); NO_DRIVER
    # when it installs none; None where the node image decides (EKS amiType, compared apart).
    driver: str | None = None
    # Whether the pool carries llmctl's mark (OWNER_KEY): False for a pool someone else made.
    owned: bool = True
    # Whether the kubelet's ephemeral storage is on the node's own disk (PoolSpec.local_disk).
    local_disk: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instanceType": self.instance_type,
            "capacityType": self.capacity,
            "minNodes": self.min_nodes,
            "currentNodes": self.current_nodes,
            "maxNodes": self.max_nodes,
            "status": self.status,
            "labels": dict(self.labels),
            "taints": [f"{t.key}={t.value}:{t.effect}" for t in self.taints],
            "problems": list(self.problems),
            "managedByLlmctl": self.owned,
            "localDisk": self.local_disk,
        }


@dataclass(frozen=True)
class Difference:
    field: str
    want: str
    have: str
    # Whether the cloud's API can change it in place: scaling, labels and taints can on all three
    # (EKS UpdateNodegroupConfig labels/taints, GKE UpdateNodePool labels/taints, AKS agent pool
    # PUT nodeLabels/nodeTaints, Azure/AKS#1515); instance type, capacity type, GPU, driver and
    # image cannot. llmctl's mark is added in place only when the user adopts the pool.
    updatable: bool
    # A difference the cloud cannot change in place but the pool works without (its local
    # disk): reported, never a reason to refuse, so that a pool made before llmctl asked for it
    # keeps working (the model then lands on the root disk). `why` says what it costs and how
    # to get it.
    blocking: bool = True
    why: str = ""

    @property
    def note_only(self) -> bool:
        return not self.updatable and not self.blocking


@dataclass(frozen=True)
class EnsureResult:
    action: Literal["created", "unchanged", "updated"]
    state: PoolState | None
    differences: tuple[Difference, ...] = ()
    # What the pool lacks that cannot be changed in place and does not block (Difference.
    # note_only): shown with the plan, left as it is.
    notes: tuple[Difference, ...] = ()


OWNER_FIELD = "owner"


@dataclass(frozen=True)
class ApiRequest:
    """One API call as `--dry-run` shows it: what would be sent, and where."""

    method: str
    target: str
    body: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "body": dict(self.body)}


def validate_node_counts(min_nodes: int, max_nodes: int, *, explicit_max: bool) -> None:
    """The node-count rule: 0 <= min <= max, 1 <= max, max <= 3 unless --max-nodes says more."""
    if min_nodes < 0:
        raise ConfigError(f"--min-nodes {min_nodes} is negative", hint="use 0 to scale to zero")
    if max_nodes < 1:
        raise ConfigError(
            f"the maximum node count {max_nodes} is below 1",
            hint="a GPU pool needs room for one node; to stop GPU nodes use "
            "`llmctl gpu disable --scale-to-zero`",
        )
    if min_nodes > max_nodes:
        raise ConfigError(
            f"--min-nodes {min_nodes} is above the maximum node count {max_nodes}",
            hint="lower --min-nodes or raise --max-nodes",
        )
    if max_nodes > MAX_NODES:
        raise ConfigError(f"--max-nodes {max_nodes} is above llmctl's limit of {MAX_NODES}")
    if max_nodes > SAFE_MAX_NODES and not explicit_max:
        raise ConfigError(
            f"gpu.maxReplicas {max_nodes} would let the pool grow above {SAFE_MAX_NODES} GPU nodes",
            hint=f"pass --max-nodes {max_nodes} to confirm that many GPU nodes",
        )


def require_names(*rules: tuple[str, str, re.Pattern[str], str, str]) -> None:
    """(flag, value, pattern, what it must be, hint): a name the cloud would refuse (or an SDK
    would turn into a broken request path) is a usage error now, exit 2, before any call."""
    for flag, value, pattern, what, hint in rules:
        if not pattern.fullmatch(value):
            raise ConfigError(f"{flag} {value!r} is not {what}", hint=hint)


CAPACITY_HINT = (
    "try another region or zone (--region/--location), --on-demand instead of spot, or another "
    "GPU instance type (--instance-type {types})"
)


def capacity_hint(cloud: CloudName) -> str:
    return CAPACITY_HINT.format(types="|".join(catalog.gpu_instance_types(cloud)))


def missing_sdk(package: str, cloud: CloudName) -> LlmctlError:
    return LlmctlError(
        f"the {CLOUD_DISPLAY[cloud]} SDK ({package}) is not installed",
        hint=install_hint("cloud"),
    )


CLOUD_DISPLAY = {c: f.display for c, f in catalog.CLOUD_FACTS.items()}

QUOTED_PERMISSION = re.compile(r"perform(?: action)?:? '?([A-Za-z0-9.:/*_-]+)'?")


class Cloud(ABC):
    """One provider's GPU node pool: pure planning here, SDK calls in the subclasses."""

    name: ClassVar[CloudName]

    # ---- pure planning ----------------------------------------------------------------------

    def pool_name(self, gpu: catalog.GpuInfo) -> str:
        return f"gpu-{gpu.name}"

    def node_pool_spec(
        self, stack: Stack, options: PoolOptions, env: Mapping[str, str] | None = None
    ) -> PoolSpec:
        """The pool to create, from the Stack with the command line's options on top."""
        cloud = self.name
        for feature, asked in (
            (Feature.PREEMPTIBLE, options.preemptible),
            (Feature.SUBNETS, bool(options.subnets)),
            (Feature.NODE_ROLE, options.node_role is not None),
            (Feature.ZONES, bool(options.zones)),
            (Feature.SERVICE_ACCOUNT, options.service_account is not None),
        ):
            reason = self.unsupported.get(feature)
            if asked and reason:
                raise ConfigError(f"{feature} is not supported on {CLOUD_DISPLAY[cloud]}: {reason}")
        for flag, given in (
            ("--cluster", options.cluster),
            ("--region/--location", options.location),
            ("--resource-group", options.resource_group),
            ("--project", options.project),
            ("--instance-type", options.instance_type),
        ):
            if given is not None and not given.strip():
                raise ConfigError(f"{flag} is empty", hint=f"give a value or leave {flag} out")
        if options.preemptible and options.on_demand:
            raise ConfigError("--preemptible and --on-demand exclude each other", hint="pick one")
        configured = stack.clouds.of(cloud)
        instance_type = options.instance_type or stack.gpu.instance_types.of(cloud)
        instance = catalog.INSTANCE_TYPES[cloud].get(instance_type)
        if instance is None or instance.gpu is None:
            raise ConfigError(
                f"{instance_type!r} is not a {cloud.value} GPU instance type llmctl knows",
                hint=f"use one of: {', '.join(catalog.gpu_instance_types(cloud))}",
            )
        gpu = catalog.GPUS[instance.gpu]
        explicit_max = options.max_nodes is not None
        max_nodes = options.max_nodes if options.max_nodes is not None else stack.gpu.max_replicas
        validate_node_counts(options.min_nodes, max_nodes, explicit_max=explicit_max)
        capacity = (
            Capacity.ON_DEMAND
            if options.on_demand
            else Capacity.PREEMPTIBLE
            if options.preemptible
            else Capacity.SPOT
        )
        spec = PoolSpec(
            cloud=cloud,
            cluster=options.cluster or configured.cluster,
            location=options.location or configured.region,
            name=self.pool_name(gpu),
            instance_type=instance_type,
            gpu=gpu.name,
            accelerator=gpu.label,
            gpus_per_node=instance.gpu_count,
            capacity=capacity,
            min_nodes=options.min_nodes,
            max_nodes=max_nodes,
            labels=catalog.gpu_node_labels(gpu),
            taints=(catalog.GPU_TAINT,),
            gpu_resource=stack.gpu.resource_name,
            project=options.project or configured.project,
            resource_group=options.resource_group or configured.resource_group,
            subscription=options.subscription,
            subnets=options.subnets,
            node_role=options.node_role,
            zones=options.zones,
            service_account=options.service_account,
            local_disk=stack.gpu.model_volume == "local",
        )
        return self.complete_spec(spec, env or {})

    def complete_spec(self, spec: PoolSpec, env: Mapping[str, str]) -> PoolSpec:
        """A cloud's own required settings (project, subscription...), checked and filled in."""
        return spec

    def local_disk_text(self, spec: PoolSpec) -> str:
        """What the pool's local disk is on this cloud, in a few words (plans and status)."""
        return "the node's local disk for the kubelet's ephemeral storage"

    @abstractmethod
    def create_requests(self, spec: PoolSpec) -> list[ApiRequest]:
        """The exact requests `ensure_gpu_pool` sends to create the pool (for --dry-run)."""

    def differences(self, spec: PoolSpec, state: PoolState) -> tuple[Difference, ...]:
        """What an existing pool has that the spec does not want."""
        diffs: list[Difference] = []

        def check(name: str, want: object, have: object, updatable: bool) -> None:
            if want != have:
                diffs.append(Difference(name, str(want), str(have), updatable))

        check("instance type", spec.instance_type, state.instance_type, False)
        check("capacity type", spec.capacity.value, state.capacity, False)
        missing = {k: v for k, v in spec.labels.items() if state.labels.get(k) != v}
        if missing:
            have = {k: state.labels.get(k) for k in missing}
            diffs.append(Difference("labels", str(missing), str(have), True))
        absent = [t for t in spec.taints if t not in state.taints]
        if absent:
            diffs.append(
                Difference(
                    "taints",
                    ", ".join(f"{t.key}={t.value}:{t.effect}" for t in absent),
                    ", ".join(f"{t.key}={t.value}:{t.effect}" for t in state.taints) or "none",
                    True,
                )
            )
        check("min nodes", spec.min_nodes, state.min_nodes, True)
        check("max nodes", spec.max_nodes, state.max_nodes, True)
        if state.accelerator is not None:
            check("GPU", spec.accelerator, state.accelerator or "none", False)
            if state.accelerator:
                check("GPUs per node", spec.gpus_per_node, state.gpus_per_node, False)
        if spec.local_disk and not state.local_disk:
            diffs.append(
                Difference(
                    "local disk",
                    self.local_disk_text(spec),
                    "none (the kubelet's ephemeral storage is on the root disk)",
                    False,
                    blocking=False,
                    why=(
                        f"{CLOUD_DISPLAY[spec.cloud]} cannot add it to an existing pool; the GPU "
                        "pods' model volume is on the node's root disk meanwhile (a slower "
                        f"fetch); to get it, recreate the pool: llmctl gpu disable --cloud "
                        f"{spec.cloud.value} --cluster {spec.cluster} --yes, then the same "
                        "`llmctl gpu enable`"
                    ),
                )
            )
        if state.driver == NO_DRIVER:
            diffs.append(Difference("GPU driver", "installed by the cloud", "none", False))
        if not state.owned:
            diffs.append(
                Difference(
                    OWNER_FIELD,
                    f"llmctl (label/tag {OWNER_KEY}={OWNER_VALUE})",
                    f"someone else (no {OWNER_KEY} mark)",
                    True,
                )
            )
        return tuple(diffs)

    # ---- adapter: each cloud's SDK calls ------------------------------------------------------

    @abstractmethod
    def read_pool(self, spec: PoolSpec) -> PoolState | None:
        """The pool as it is, None when it does not exist; fails when the cluster does not."""

    @abstractmethod
    def create_pool(self, spec: PoolSpec, progress: Progress) -> None: ...

    @abstractmethod
    def update_pool(self, spec: PoolSpec, progress: Progress) -> None:
        """Change in place what `differences` calls updatable; keep everything else the pool has."""

    @abstractmethod
    def delete_pool(self, spec: PoolSpec, progress: Progress) -> None: ...

    @abstractmethod
    def scale_to_zero(self, spec: PoolSpec, progress: Progress) -> None: ...

    @abstractmethod
    def wait_until_ready(self, spec: PoolSpec, progress: Progress) -> None:
        """Wait while a pool that exists is still being created or updated."""

    # ---- the behaviour the commands rely on --------------------------------------------------

    def decide(
        self, spec: PoolSpec, state: PoolState | None, *, adopt: bool = False
    ) -> EnsureResult:
        """What `ensure_gpu_pool` would do with this pool, without doing it.

        Scaling, labels and taints are changed in place (every cloud allows it); anything else is
        reported and nothing is touched, since changing it means recreating the pool. A pool
        without llmctl's mark is someone else's: refused unless `adopt` (then marked in place).
        """
        if state is None:
            return EnsureResult("created", None)
        if state.status in self.deleting_statuses:
            raise LlmctlError(
                f"the GPU pool {spec.name!r} is being deleted (status {state.status})",
                hint="wait until `llmctl gpu status` no longer shows it, then run enable again",
            )
        if state.status in self.failed_statuses:
            problems = "; ".join(state.problems) or "no details given"
            if QUOTA_WORDS.search(problems):
                # Deleting the pool, another region's same account or another G type cannot help
                # with a quota of 0 (review N1): name the quota instead.
                raise LlmctlError(
                    f"the GPU pool {spec.name!r} exists but is {state.status}: {problems}",
                    hint=self.quota_hint(spec),
                )
            raise LlmctlError(
                f"the GPU pool {spec.name!r} exists but is {state.status}: {problems}",
                hint=f"delete it with `llmctl gpu disable --cloud {spec.cloud.value} --cluster "
                f"{spec.cluster} --yes` and run enable again; if the cause is capacity, "
                + capacity_hint(spec.cloud),
            )
        found = tuple(
            replace(d, updatable=adopt) if d.field == OWNER_FIELD else d
            for d in self.differences(spec, state)
        )
        notes = tuple(d for d in found if d.note_only)
        diffs = tuple(d for d in found if not d.note_only)
        if any(not d.updatable for d in diffs):
            raise PoolDiffersError(spec, diffs)
        if diffs:
            return EnsureResult("updated", state, diffs, notes)
        return EnsureResult("unchanged", state, (), notes)

    def current_plan(
        self, spec: PoolSpec, progress: Progress = _ignore, *, adopt: bool = False
    ) -> EnsureResult:
        """What `ensure_gpu_pool` would do with the pool as it is now (waited for while the
        cloud is still busy with it)."""
        state = self.read_pool(spec)
        if state is not None and state.status in self.busy_statuses:
            progress(state.status)
            self.wait_until_ready(spec, progress)
            state = self.read_pool(spec)
        return self.decide(spec, state, adopt=adopt)

    def ensure_gpu_pool(
        self, spec: PoolSpec, progress: Progress = _ignore, *, adopt: bool = False
    ) -> EnsureResult:
        """Create the pool, or leave it alone if it matches, or refuse with what differs."""
        return self._carry_out(spec, self.current_plan(spec, progress, adopt=adopt), progress)

    def apply_plan(
        self,
        spec: PoolSpec,
        plan: EnsureResult,
        progress: Progress = _ignore,
        *,
        adopt: bool = False,
    ) -> EnsureResult:
        """Carry out `plan` (a `decide` the user was shown) and nothing else: the pool is read
        again first, and when it now needs another change than the plan's (someone changed it
        meanwhile), nothing is changed and PlanChangedError says what moved."""
        try:
            now = self.current_plan(spec, progress, adopt=adopt)
        except LlmctlError as exc:
            raise PlanChangedError(spec, plan, f"now {exc.message}") from exc
        if (now.action, now.differences) != (plan.action, plan.differences):
            raise PlanChangedError(spec, plan, f"it would now be {describe_plan(now)}")
        return self._carry_out(spec, now, progress)

    def _carry_out(self, spec: PoolSpec, plan: EnsureResult, progress: Progress) -> EnsureResult:
        if plan.action == "created":
            self.create_pool(spec, progress)
        elif plan.action == "updated":
            self.update_pool(spec, progress)
        else:
            return plan
        return EnsureResult(plan.action, self.read_pool(spec), plan.differences, plan.notes)

    # What this cloud cannot do (a feature asked for is refused with its reason), each cloud's
    # own: `disable --scale-to-zero` also prints the ZERO_MAX_NODES reason as a note.
    unsupported: ClassVar[Mapping[Feature, str]] = {}

    # Pool statuses (as each cloud spells them) that mean "wait", "gone soon" and "broken".
    busy_statuses: ClassVar[frozenset[str]] = frozenset()
    deleting_statuses: ClassVar[frozenset[str]] = frozenset()
    failed_statuses: ClassVar[frozenset[str]] = frozenset()

    def pool_blockers(self, spec: PoolSpec, state: PoolState | None) -> list[str]:
        """Why the pool itself cannot grow from zero right now (empty: it can)."""
        if state is None:
            return [
                f"no GPU pool {spec.name!r}: run `llmctl gpu enable --cloud {spec.cloud.value}`"
            ]
        if state.status in self.failed_statuses | self.deleting_statuses:
            return [f"the pool is {state.status}"]
        if state.status in self.busy_statuses:
            return [f"the pool is {state.status}; it can scale once that ends"]
        if state.max_nodes < 1:
            return [
                "autoscaling is off (the pool was scaled to zero): run `llmctl gpu enable "
                f"--cloud {spec.cloud.value}` to turn it back on"
            ]
        return []

    @abstractmethod
    def kubeconfig_command(self, spec: PoolSpec) -> str:
        """The cloud CLI command that writes a kubeconfig entry for the cluster."""

    # ---- quota: what the pool may grow to, read before anything changes ------------------------

    @abstractmethod
    def read_quotas(self, spec: PoolSpec) -> QuotaReport:
        """The quotas `spec.max_nodes` GPU nodes draw on; unreadable ones are a reason, not an
        error (a missing read permission must not stop a user who has the quota)."""

    @abstractmethod
    def quota_hint(self, spec: PoolSpec) -> str:
        """Which quotas a pool of this kind needs and how to raise them (no values: for reasons
        read elsewhere, an autoscaler event or a pool's health issue, that mention quota)."""

    # ---- the other GPU pools llmctl may have made in this cluster ------------------------------

    @abstractmethod
    def pool_names(self, spec: PoolSpec) -> list[str]:
        """The names of every node pool in the cluster."""

    def llmctl_pool_names(self) -> set[str]:
        """The names llmctl gives GPU pools on this cloud, one per GPU it knows."""
        types = catalog.INSTANCE_TYPES[self.name].values()
        return {self.pool_name(catalog.GPUS[t.gpu]) for t in types if t.gpu}

    def other_gpu_pools(self, spec: PoolSpec) -> list[str]:
        """llmctl-named GPU pools in the cluster other than the spec's (another GPU type's)."""
        wanted = self.llmctl_pool_names() - {spec.name}
        return sorted(n for n in self.pool_names(spec) if n in wanted)

    def disable(
        self,
        spec: PoolSpec,
        *,
        scale_to_zero: bool,
        progress: Progress = _ignore,
        force: bool = False,
    ) -> bool:
        """Delete the pool (or scale it to zero). False when there was no pool to act on. A pool
        without llmctl's mark is left alone unless `force`."""
        state = self.read_pool(spec)
        if state is None:
            return False
        if not state.owned and not force:
            raise NotOursError(spec)
        if scale_to_zero:
            self.scale_to_zero(spec, progress)
        else:
            self.delete_pool(spec, progress)
        return True


# Words in pool health issues and autoscaler messages that mean a quota, not capacity: EC2's
# MaxSpotInstanceCountExceeded / VcpuLimitExceeded, GCE's QUOTA_EXCEEDED ("GCE quota exceeded"),
# Azure's InsufficientVCPUQuota / "Operation could not be completed as it results in exceeding
# approved ... quota".
QUOTA_WORDS = re.compile(
    r"quota|MaxSpotInstanceCountExceeded|VcpuLimitExceeded|vcpu limit|InstanceLimitExceeded",
    re.IGNORECASE,
)


class NotOursError(LlmctlError):
    """A pool with llmctl's name that llmctl did not make (it lacks llmctl's mark)."""

    def __init__(self, spec: PoolSpec) -> None:
        super().__init__(
            f"the {spec.cloud.value} pool {spec.name!r} in cluster {spec.cluster!r} has no "
            f"{OWNER_KEY}={OWNER_VALUE} mark: llmctl did not create it, so it leaves it alone",
            hint="if it is yours to remove, pass --force; `llmctl gpu enable --adopt` marks it "
            "as llmctl's",
        )


def describe_plan(plan: EnsureResult) -> str:
    """A plan in a few words: "created", "left as it is", "updated (max nodes: 2 -> 3)"."""
    if plan.action == "updated":
        changes = "; ".join(f"{d.field}: {d.have} -> {d.want}" for d in plan.differences)
        return f"updated ({changes})"
    return "left as it is" if plan.action == "unchanged" else "created"


class PlanChangedError(LlmctlError):
    """The pool changed between the plan the user was shown and its application."""

    def __init__(self, spec: PoolSpec, plan: EnsureResult, now: str) -> None:
        super().__init__(
            f"the {spec.cloud.value} GPU pool {spec.name!r} in cluster {spec.cluster!r} changed "
            "after the plan was shown, so nothing was changed: it was to be "
            f"{describe_plan(plan)}, but {now}",
            hint="someone else changed the pool meanwhile: run the same `llmctl gpu enable` "
            "again to see the plan for the pool as it is now",
        )


class PoolDiffersError(LlmctlError):
    """An existing pool has settings llmctl would not give it and cannot change in place."""

    def __init__(self, spec: PoolSpec, differences: tuple[Difference, ...]) -> None:
        lines = "\n".join(f"  {d.field}: wants {d.want}, has {d.have}" for d in differences)
        super().__init__(
            f"the {spec.cloud.value} GPU pool {spec.name!r} in cluster {spec.cluster!r} exists "
            f"with different settings; nothing was changed:\n{lines}",
            hint=(
                (
                    "it is not llmctl's pool: pass --adopt to mark it as llmctl's (only if it "
                    "is the GPU pool you want llmctl to manage); "
                    if [d.field for d in differences] == [OWNER_FIELD]
                    else ""
                )
                + f"to recreate it: llmctl gpu disable --cloud {spec.cloud.value} --cluster "
                f"{spec.cluster} --yes"
                + (" --force" if any(d.field == OWNER_FIELD for d in differences) else "")
                + ", then run the same `llmctl gpu enable` again; or pass options that match "
                "the existing pool"
            ),
        )
        self.differences = differences
