"""`llmctl gpu enable | status | disable`: scale-to-zero spot GPU node pools on each cloud."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from llmctl.cli import options
from llmctl.cli.console import confirm, err_console, status_spinner
from llmctl.errors import ConfigError, LlmctlError

if TYPE_CHECKING:
    from llmctl.clouds.base import Cloud, EnsureResult, PoolSpec
    from llmctl.clouds.quota import QuotaReport
    from llmctl.config import Stack
    from llmctl.kube import Check, ClusterFacts

app = typer.Typer(
    help="Create, inspect and remove scale-to-zero spot GPU node pools.", no_args_is_help=True
)


@dataclass(frozen=True)
class Target:
    """The options every `llmctl gpu` command takes, defined once (`@target_options`)."""

    cloud: str
    cluster: str | None
    region: str | None
    resource_group: str | None
    project: str | None
    instance_type: str | None
    config: Path | None
    sets: list[str] | None


# One typer option per Target field, in the same order: a new shared option is added here and
# in Target, and every command has it.
TARGET_OPTIONS: dict[str, Any] = {
    "cloud": typer.Option(..., "--cloud", help="aws, azure or gcp."),
    "cluster": typer.Option(
        None, "--cluster", help="Cluster name (default: clouds.<cloud>.cluster)."
    ),
    "region": typer.Option(
        None,
        "--region",
        "--location",
        help="AWS region, GCP region or zone, Azure location (default: clouds.<cloud>.region).",
    ),
    "resource_group": typer.Option(
        None, "--resource-group", help="Azure resource group (default: clouds.azure.resourceGroup)."
    ),
    "project": typer.Option(
        None, "--project", help="GCP project (default: clouds.gcp.project, $GOOGLE_CLOUD_PROJECT)."
    ),
    "instance_type": typer.Option(
        None, "--instance-type", help="GPU instance type (default: gpu.instanceTypes.<cloud>)."
    ),
    "config": options.ConfigOption,
    "sets": options.SetOption,
}
TARGET_TYPES: dict[str, Any] = {f.name: f.type for f in fields(Target)}


# Every `llmctl gpu` command declares `target: Target` and gets these options in one.
target_options = options.option_group("target", Target, TARGET_OPTIONS, TARGET_TYPES)


KubeconfigOpt = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG).")
ContextOpt = typer.Option(None, "--context", help="Kubeconfig context (default: current).")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


_err = err_console


def _spec(target: Target, **given: Any) -> tuple[Cloud, PoolSpec, Stack]:
    from llmctl.clouds import get_cloud
    from llmctl.clouds.base import PoolOptions

    stack = options.load(target.config, target.sets).stack
    cloud = get_cloud(target.cloud)
    pool_options = PoolOptions(
        cluster=target.cluster,
        location=target.region,
        resource_group=target.resource_group,
        project=target.project,
        instance_type=target.instance_type,
        **given,
    )
    spec = cloud.node_pool_spec(stack, pool_options, env=os.environ)
    return cloud, spec, stack


@contextmanager
def _waiting(what: str, spec: PoolSpec, show: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time and the pool's last status; Ctrl-C says where things stand."""
    last = ["not yet reported"]
    console = _err()
    with status_spinner(console, what, show) as describe:

        def progress(status: str) -> None:
            last[0] = status
            describe(f"{what}: {status}")

        try:
            yield progress
        except KeyboardInterrupt:
            console.print(
                f"[yellow]Interrupted.[/] The cloud carries on with the request: pool "
                f"{spec.name!r} was last seen as {last[0]}. Check it with `llmctl gpu status "
                f"--cloud {spec.cloud.value} --cluster {spec.cluster}`, and run the same "
                "command again to finish (it is safe to repeat)."
            )
            raise typer.Exit(130) from None


def _plan_table(impl: Cloud, spec: PoolSpec, action: str) -> Table:
    table = Table(title=f"GPU node pool plan: {action}", show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    for key, value in _plan_rows(impl, spec):
        table.add_row(key, value)
    return table


def _plan_rows(impl: Cloud, spec: PoolSpec) -> list[tuple[str, str]]:
    rows = [
        ("cloud", spec.cloud.value),
        ("cluster", spec.cluster),
        ("region/location", spec.location),
        ("pool", spec.name),
        ("instance type", f"{spec.instance_type} ({spec.gpus_per_node} x {spec.accelerator})"),
        ("capacity", spec.capacity.value),
        ("nodes", f"min {spec.min_nodes}, max {spec.max_nodes}"),
        ("labels", ", ".join(f"{k}={v}" for k, v in spec.labels.items())),
        ("taints", ", ".join(f"{t.key}={t.value}:{t.effect}" for t in spec.taints)),
        (
            "local disk",
            impl.local_disk_text(spec)
            if spec.local_disk
            else "none (gpu.model.volume is ephemeral)",
        ),
    ]
    if spec.zones:
        rows.insert(3, ("zones", ", ".join(spec.zones)))
    return rows


def _print_preflight(console: Console, checks: list[Check]) -> None:
    console.print("Preflight: what scale-from-zero needs on this cluster")
    for check in checks:
        mark = (
            "[green]ok  [/]"
            if check.ok
            else "[red]no  [/]"
            if check.blocks_scale_from_zero
            else "[yellow]warn[/]"
        )
        console.print(f"  {mark} {check.name}: {check.message}")
        if check.fix:
            console.print(f"       fix: {check.fix}", markup=False)


def _cluster(
    impl: Cloud,
    spec: PoolSpec,
    kubeconfig: str | None,
    context: str | None,
    required: bool,
    skip_flag: str = "--skip-cluster-setup",
) -> tuple[Any, ClusterFacts | None, str | None]:
    """The Kubernetes client and what the cluster runs; when not `required`, a cluster that
    cannot be read is a reason (third item), not an error."""
    from llmctl import kube

    try:
        api = kube.api_client(
            kubeconfig, context, hint=impl.kubeconfig_command(spec), skip_flag=skip_flag
        )
        return api, kube.cluster_facts(api), None
    except LlmctlError as exc:
        if required:
            raise
        return None, None, exc.format_message().splitlines()[0]


@app.command()
@target_options
def enable(
    target: Target,
    min_nodes: int = typer.Option(0, "--min-nodes", help="Fewest GPU nodes (0: scale to zero)."),
    max_nodes: int | None = typer.Option(
        None,
        "--max-nodes",
        help="Most GPU nodes (default: gpu.maxReplicas; above 3 only when given here).",
    ),
    on_demand: bool = typer.Option(False, "--on-demand", help="On-demand VMs instead of spot."),
    preemptible: bool = typer.Option(False, "--preemptible", help="GCP: preemptible, not spot."),
    zones: list[str] | None = typer.Option(
        None,
        "--zones",
        help="GCP: node zones (repeatable; default: the cluster's zones that offer the GPU).",
    ),
    subnet: list[str] | None = typer.Option(
        None, "--subnet", help="AWS subnet ID (repeatable; default: an existing node group's)."
    ),
    node_role: str | None = typer.Option(
        None, "--node-role", help="AWS node IAM role ARN (default: an existing node group's)."
    ),
    service_account: str | None = typer.Option(
        None,
        "--service-account",
        help="GCP node service account email (default: the one the cluster's other pools use).",
    ),
    ignore_quota: bool = typer.Option(
        False,
        "--ignore-quota",
        help="Go on when a GPU quota is below what --max-nodes needs (the pool cannot grow).",
    ),
    adopt: bool = typer.Option(
        False,
        "--adopt",
        help="Take over an existing pool llmctl did not create: mark it as llmctl's.",
    ),
    skip_cluster_setup: bool = typer.Option(
        False, "--skip-cluster-setup", help="Do not apply the device plugin and RuntimeClass."
    ),
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the preflight and the exact API requests as YAML; change nothing.",
    ),
    yes: bool = YesOpt,
) -> None:
    """Check the cluster, create (or update) the GPU node pool, then apply the device plugin
    and, where the nodes have its handler, the RuntimeClass."""
    from llmctl import kube
    from llmctl.manifests import cluster_setup_objects

    impl, spec, stack = _spec(
        target,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        on_demand=on_demand,
        preemptible=preemptible,
        subnets=tuple(subnet or ()),
        node_role=node_role,
        zones=tuple(zones or ()),
        service_account=service_account,
    )
    console = _err()
    # The cluster first, before anything changes: its kubeconfig (needed later to apply the
    # GPU objects) and what scale-from-zero needs there.
    api, facts, unread = _cluster(
        impl, spec, kubeconfig, context, required=not (skip_cluster_setup or dry_run)
    )
    checks = kube.preflight(spec.cloud, facts) if facts is not None else []
    if facts is not None:
        _print_preflight(console, checks)
    else:
        console.print(f"[yellow]Preflight skipped, cluster not read:[/] {unread}")
    # The quota, also before anything changes: a new account's GPU quota is 0, and a pool that
    # starts at zero nodes is created anyway (review N1).
    quota = impl.read_quotas(spec)
    _print_quota(console, quota)
    if quota.short and not ignore_quota and not dry_run:
        raise LlmctlError(
            f"the {spec.cloud.value} GPU quota is below what {spec.max_nodes} GPU nodes need, "
            "so the pool could not grow: nothing was changed",
            hint="raise the quota as shown above, or pass --ignore-quota to create the pool "
            "anyway (or lower --max-nodes)",
        )
    objects = (
        []
        if skip_cluster_setup
        else kube.setup_objects(spec.cloud, cluster_setup_objects(stack, spec.cloud), facts)
    )
    if dry_run:
        console.print(_plan_table(impl, spec, "dry run, nothing is changed"))
        requests = [r.as_dict() for r in impl.create_requests(spec)]
        requests += [kube.apply_request(o).as_dict() for o in objects]
        import yaml

        typer.echo(yaml.safe_dump(requests, sort_keys=False, width=100), nl=False)
        return

    with _waiting("reading the pool", spec) as progress:
        progress("describing")
        state = impl.read_pool(spec)
        if state is not None and state.status in impl.busy_statuses:
            impl.wait_until_ready(spec, progress)
            state = impl.read_pool(spec)
        others = impl.other_gpu_pools(spec) if state is None else []
    if others:
        raise LlmctlError(
            f"cluster {spec.cluster!r} already has llmctl's GPU pool {', '.join(others)}: "
            f"--instance-type {spec.instance_type} ({spec.accelerator}) would add a second pool "
            f"{spec.name!r} beside it, which `status` and `disable` for the other type would not "
            "see; nothing was changed",
            hint="to change the GPU type, remove the other pool first (`llmctl gpu disable "
            f"--cloud {spec.cloud.value} --instance-type TYPE --yes` with its type), then run "
            "enable again; or use an instance type with the same GPU",
        )
    if state is not None and state.managed_device_plugin and objects:
        console.print(
            f"The {spec.cloud.value} pool runs the cloud's managed NVIDIA device plugin: "
            "llmctl applies none of its own."
        )
        objects = [o for o in objects if o["kind"] != "DaemonSet"]
    decision = impl.decide(spec, state, adopt=adopt)
    for note in decision.notes:
        console.print(
            f"[yellow]Not changed[/] {note.field}: the pool has {note.have}, llmctl would give "
            f"it {note.want}; {note.why}",
            highlight=False,
        )
    if decision.action == "unchanged":
        console.print(
            f"GPU pool {spec.name!r} already exists with these settings: nothing to change."
        )
    else:
        action = "create" if decision.action == "created" else "update"
        console.print(_plan_table(impl, spec, action))
        for diff in decision.differences:
            console.print(f"  change {diff.field}: {diff.have} -> {diff.want}")
        if objects:
            console.print(
                "Then apply (server-side, field manager llmctl): "
                + ", ".join(kube.apply_request(o).name for o in objects)
            )
        if not yes:
            confirm("Go ahead?")
        with _waiting(f"{decision.action.removesuffix('d')}ing pool {spec.name}", spec) as progress:
            # Exactly the plan shown: a pool changed meanwhile is refused, not changed otherwise.
            result = impl.apply_plan(spec, decision, progress, adopt=adopt)
        _say_result(console, spec, result)

    if objects:
        kube.apply(api, objects)
        console.print(
            "Applied (server-side, field manager llmctl): "
            + ", ".join(kube.apply_request(o).name for o in objects)
        )
    from llmctl import catalog

    console.print(
        f"Verify: kubectl get nodes -l {catalog.GPU_NODE_ACCELERATOR_LABEL}={spec.accelerator}; "
        f"llmctl gpu status --cloud {spec.cloud.value} --cluster {spec.cluster}"
    )
    blocking = [c.message for c in checks if c.blocks_scale_from_zero]
    if blocking:
        # Exit non-zero so that automation notices (review N15): the pool is there, but a
        # pending GPU pod would wait for ever.
        raise LlmctlError(
            f"GPU pool {spec.name!r} is in place, but it cannot scale from zero: "
            + "; ".join(blocking),
            hint="fix what the preflight marks `no` (each line has its fix), then check with "
            f"`llmctl gpu status --cloud {spec.cloud.value} --cluster {spec.cluster}`",
        )


def _print_quota(console: Console, report: QuotaReport) -> None:
    if report.unread is not None:
        console.print(f"[yellow]Quota not read:[/] {report.unread}")
        return
    console.print("Quota: what the pool's maximum size needs")
    for quota in report.quotas:
        mark = (
            "[red]no  [/]"
            if quota.short
            else "[yellow]warn[/]"
            if quota.tight
            else "[green]ok  [/]"
        )
        console.print(f"  {mark} {quota.describe()}", highlight=False)
        if quota.short or quota.tight:
            console.print(f"       raise it: {quota.raise_how}", markup=False, highlight=False)


def _say_result(console: Console, spec: PoolSpec, result: EnsureResult) -> None:
    if result.action == "created":
        console.print(
            f"[green]Created[/] GPU pool {spec.name!r} ({spec.instance_type}, "
            f"{spec.capacity.value}, {spec.min_nodes}..{spec.max_nodes} nodes)."
        )
    elif result.action == "updated":
        changed = ", ".join(d.field for d in result.differences)
        console.print(f"[green]Updated[/] GPU pool {spec.name!r} in place ({changed}).")


@app.command()
@target_options
def status(
    target: Target,
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
    skip_cluster: bool = typer.Option(False, "--skip-cluster", help="Ask only the cloud API."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
) -> None:
    """The pool as the cloud sees it, the cluster's GPU nodes and device plugin pods, and
    whether the pool can scale from zero right now (and why not)."""
    from llmctl import kube
    from llmctl.clouds.base import QUOTA_WORDS
    from llmctl.manifests import cluster_setup_objects

    if output not in ("table", "json"):
        raise ConfigError(f"--output {output!r} is not supported", hint="use table or json")
    impl, spec, stack = _spec(target, max_nodes=_reading_max_nodes())
    pool = impl.read_pool(spec)
    report: dict[str, Any] = {
        "cloud": spec.cloud.value,
        "cluster": spec.cluster,
        "location": spec.location,
        "pool": pool.as_dict() if pool else None,
        # The cluster's side: always this key, null with --skip-cluster (`cluster` stays the name).
        "kubernetes": None,
    }
    blockers = impl.pool_blockers(spec, pool)
    # The quota for the pool's own maximum (or, without a pool, the configured one): `spec`
    # carries llmctl's reading cap, not a size anyone asked for.
    sized = replace(
        spec, max_nodes=pool.max_nodes if pool and pool.max_nodes else stack.gpu.max_replicas
    )
    quota = impl.read_quotas(sized)
    report["quota"] = quota.as_dict()
    blockers += [f"quota too low: {q.describe()}; raise it: {q.raise_how}" for q in quota.short]
    if pool is not None:
        blockers += [
            f"{p} ({impl.quota_hint(sized)})" for p in pool.problems if QUOTA_WORDS.search(p)
        ]
    known = True
    if skip_cluster:
        known = False
    else:
        try:
            api, facts, _ = _cluster(
                impl, spec, kubeconfig, context, required=True, skip_flag="--skip-cluster"
            )
            assert facts is not None
            report["kubernetes"] = _cluster_report(api, spec, stack, facts, cluster_setup_objects)
            report["preflight"] = [c.as_dict() for c in kube.preflight(spec.cloud, facts)]
            managed = pool is not None and pool.managed_device_plugin
            blockers += kube.cluster_blockers(spec.cloud, facts, managed_plugin=managed)
            reasons = kube.scale_up_reasons(api, facts, spec.gpu_resource, spec.name)
            report["kubernetes"]["autoscaler"] = [
                {"source": r.source, "message": r.message} for r in reasons
            ]
            blockers += [
                str(r) + (f" ({impl.quota_hint(sized)})" if QUOTA_WORDS.search(r.message) else "")
                for r in reasons
            ]
        except LlmctlError as exc:
            report["kubernetes"] = {"error": exc.format_message()}
            known = False
    report["scaleFromZero"] = _verdict(blockers, known)
    if output == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    _print_status(report, spec)


def _verdict(blockers: list[str], cluster_known: bool) -> dict[str, Any]:
    """Can a pending GPU pod get a GPU node from zero now: yes, no (and why), or unknown."""
    if blockers:
        return {"possible": False, "reasons": blockers}
    if not cluster_known:
        return {"possible": None, "reasons": ["the cluster was not read"]}
    return {"possible": True, "reasons": []}


def _cluster_report(
    api: Any,
    spec: PoolSpec,
    stack: Stack,
    facts: ClusterFacts,
    setup_objects: Callable[..., list[dict[str, Any]]],
) -> dict[str, Any]:
    from llmctl import catalog, kube

    nodes = kube.gpu_nodes(api, spec.gpu_resource)
    where = kube.device_plugin_pods(
        setup_objects(stack, spec.cloud)
    ) or catalog.MANAGED_DEVICE_PLUGIN_PODS.get(spec.cloud)
    pods = kube.pods_ready(api, *where) if where else None
    return {
        "gpuNodes": [
            {
                "name": n.name,
                "accelerator": n.accelerator,
                "allocatableGpus": n.allocatable_gpus,
                "ready": n.ready,
            }
            for n in nodes
        ],
        "devicePluginPods": {"ready": pods.ready, "total": pods.total} if pods else None,
        "otherDevicePlugins": [p.where for p in facts.device_plugins if not p.by_llmctl],
    }


def _reading_max_nodes() -> int:
    # `status` reads whatever pool exists: the node-count cap guards creation, not reading.
    from llmctl.clouds.base import MAX_NODES

    return MAX_NODES


def _print_status(report: dict[str, Any], spec: PoolSpec) -> None:
    console = Console()
    pool = report["pool"]
    if pool is None:
        console.print(
            f"No GPU pool {spec.name!r} in {spec.cloud.value} cluster {spec.cluster!r}. "
            f"Create it with `llmctl gpu enable --cloud {spec.cloud.value}`."
        )
    else:
        table = Table(title=f"GPU pool {pool['name']} ({spec.cloud.value}/{spec.cluster})")
        for column in ("instance type", "capacity", "min", "current", "max", "status"):
            table.add_column(column)
        current = "-" if pool["currentNodes"] is None else str(pool["currentNodes"])
        table.add_row(
            pool["instanceType"],
            pool["capacityType"],
            str(pool["minNodes"]),
            current,
            str(pool["maxNodes"]),
            pool["status"],
        )
        console.print(table)
        for problem in pool["problems"]:
            console.print(f"[red]problem:[/] {problem}")
    verdict = report["scaleFromZero"]
    if verdict["possible"] is True:
        console.print("[green]Can scale from zero now.[/]")
    elif verdict["possible"] is False:
        console.print("[red]Cannot scale from zero now:[/]")
        for reason in verdict["reasons"]:
            console.print(f"  - {reason}")
    else:
        console.print("Scale from zero: unknown (the cluster was not read).")
    cluster = report["kubernetes"]
    if cluster is None:
        return
    if "error" in cluster:
        console.print(f"[yellow]cluster not read:[/] {cluster['error']}")
        return
    nodes = Table(title="GPU nodes in the cluster")
    for column in ("node", "accelerator", "allocatable GPUs", "ready"):
        nodes.add_column(column)
    for node in cluster["gpuNodes"]:
        nodes.add_row(
            node["name"],
            node["accelerator"],
            str(node["allocatableGpus"]),
            "yes" if node["ready"] else "no",
        )
    console.print(nodes if cluster["gpuNodes"] else "No GPU nodes right now (scaled to zero).")
    plugin = cluster["devicePluginPods"]
    if plugin is not None:
        console.print(f"Device plugin pods ready: {plugin['ready']}/{plugin['total']}")


@app.command()
@target_options
def disable(
    target: Target,
    scale_to_zero: bool = typer.Option(
        False, "--scale-to-zero", help="Keep the pool, set its maximum and desired size to 0."
    ),
    force: bool = typer.Option(
        False, "--force", help="Also act on a pool llmctl did not create (it lacks llmctl's mark)."
    ),
    yes: bool = YesOpt,
) -> None:
    """Delete the GPU node pool (or only scale it to zero)."""
    from llmctl.clouds.base import Feature, NotOursError

    impl, spec, _ = _spec(target, max_nodes=_reading_max_nodes())
    console = _err()
    state = impl.read_pool(spec)
    others = impl.other_gpu_pools(spec)
    if others:
        console.print(
            f"Note: llmctl's GPU pool(s) {', '.join(others)} of another GPU type are in the "
            "cluster too; this command acts on "
            f"{spec.name!r} only (pass that pool's --instance-type to remove it)."
        )
    if state is None:
        console.print(f"No GPU pool {spec.name!r} in cluster {spec.cluster!r}: nothing to do.")
        return
    if not state.owned and not force:
        raise NotOursError(spec)
    what = "scale to zero" if scale_to_zero else "delete"
    if scale_to_zero:
        note = impl.unsupported.get(Feature.ZERO_MAX_NODES)
        if note:
            console.print(f"Note: {note}.")
    if not yes:
        confirm(
            f"{what.capitalize()} GPU pool {spec.name!r} in {spec.cloud.value} cluster "
            f"{spec.cluster!r}?"
        )
    with _waiting(f"{what}: pool {spec.name}", spec) as progress:
        impl.disable(spec, scale_to_zero=scale_to_zero, progress=progress, force=force)
    done = "Scaled to zero" if scale_to_zero else "Deleted"
    console.print(f"[green]{done}[/] GPU pool {spec.name!r}.")
