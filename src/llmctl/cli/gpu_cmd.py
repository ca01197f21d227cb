"""`llmctl gpu enable | status | disable`: scale-to-zero spot GPU node pools on each cloud."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from llmctl.cli import options
from llmctl.cli.console import confirm, err_console, status_spinner
from llmctl.errors import ConfigError

if TYPE_CHECKING:
    from llmctl.clouds.base import Cloud, EnsureResult, PoolSpec
    from llmctl.config import Stack

app = typer.Typer(
    help="Create, inspect and remove scale-to-zero spot GPU node pools.", no_args_is_help=True
)

CloudOpt = typer.Option(..., "--cloud", help="aws, azure or gcp.")
ClusterOpt = typer.Option(None, "--cluster", help="Cluster name (default: clouds.<cloud>.cluster).")
RegionOpt = typer.Option(
    None,
    "--region",
    "--location",
    help="AWS region, GCP region or zone, Azure location (default: clouds.<cloud>.region).",
)
ResourceGroupOpt = typer.Option(
    None, "--resource-group", help="Azure resource group (default: clouds.azure.resourceGroup)."
)
ProjectOpt = typer.Option(
    None, "--project", help="GCP project (default: clouds.gcp.project, $GOOGLE_CLOUD_PROJECT)."
)
KubeconfigOpt = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG).")
SubnetOpt = typer.Option(
    None, "--subnet", help="AWS subnet ID (repeatable; default: an existing node group's)."
)
ContextOpt = typer.Option(None, "--context", help="Kubeconfig context (default: current).")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


_err = err_console


def _spec(
    cloud_name: str, config: Path | None, sets: list[str] | None, **given: Any
) -> tuple[Cloud, PoolSpec, Stack]:
    from llmctl.clouds import get_cloud
    from llmctl.clouds.base import PoolOptions

    stack = options.load(config, sets).stack
    cloud = get_cloud(cloud_name)
    spec = cloud.node_pool_spec(stack, PoolOptions(**given), env=os.environ)
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


def _plan_table(spec: PoolSpec, action: str) -> Table:
    table = Table(title=f"GPU node pool plan: {action}", show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
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
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _kube_hint(cloud: Cloud, spec: PoolSpec) -> str:
    return cloud.kubeconfig_command(spec)


@app.command()
def enable(
    cloud: str = CloudOpt,
    cluster: str | None = ClusterOpt,
    region: str | None = RegionOpt,
    resource_group: str | None = ResourceGroupOpt,
    project: str | None = ProjectOpt,
    instance_type: str | None = typer.Option(
        None, "--instance-type", help="GPU instance type (default: gpu.instanceTypes.<cloud>)."
    ),
    min_nodes: int = typer.Option(0, "--min-nodes", help="Fewest GPU nodes (0: scale to zero)."),
    max_nodes: int | None = typer.Option(
        None,
        "--max-nodes",
        help="Most GPU nodes (default: gpu.maxReplicas; above 3 only when given here).",
    ),
    on_demand: bool = typer.Option(False, "--on-demand", help="On-demand VMs instead of spot."),
    preemptible: bool = typer.Option(False, "--preemptible", help="GCP: preemptible, not spot."),
    subnet: list[str] | None = SubnetOpt,
    node_role: str | None = typer.Option(
        None, "--node-role", help="AWS node IAM role ARN (default: an existing node group's)."
    ),
    skip_cluster_setup: bool = typer.Option(
        False, "--skip-cluster-setup", help="Do not apply the device plugin and RuntimeClass."
    ),
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the exact API requests as YAML and change nothing."
    ),
    yes: bool = YesOpt,
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Create (or check) the GPU node pool, then apply the device plugin and RuntimeClass."""
    from llmctl import kube
    from llmctl.manifests import cluster_setup_objects

    impl, spec, stack = _spec(
        cloud,
        config,
        sets,
        cluster=cluster,
        location=region,
        resource_group=resource_group,
        project=project,
        instance_type=instance_type,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        on_demand=on_demand,
        preemptible=preemptible,
        subnets=tuple(subnet or ()),
        node_role=node_role,
    )
    objects = [] if skip_cluster_setup else cluster_setup_objects(stack, spec.cloud)
    console = _err()
    if dry_run:
        console.print(_plan_table(spec, "dry run, nothing is changed"))
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
    decision = impl.decide(spec, state)
    if decision.action == "unchanged":
        console.print(
            f"GPU pool {spec.name!r} already exists with these settings: nothing to change."
        )
    else:
        console.print(
            _plan_table(spec, "create" if decision.action == "created" else "update scaling")
        )
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
            result = impl.ensure_gpu_pool(spec, progress)
        _say_result(console, spec, result)

    if objects:
        api = kube.api_client(kubeconfig, context, hint=_kube_hint(impl, spec))
        kube.apply(api, objects)
        console.print(
            "Applied (server-side, field manager llmctl): "
            + ", ".join(kube.apply_request(o).name for o in objects)
        )
    console.print(
        f"Verify: kubectl get nodes -l accelerator={spec.accelerator}; "
        f"llmctl gpu status --cloud {spec.cloud.value} --cluster {spec.cluster}"
    )


def _say_result(console: Console, spec: PoolSpec, result: EnsureResult) -> None:
    if result.action == "created":
        console.print(
            f"[green]Created[/] GPU pool {spec.name!r} ({spec.instance_type}, "
            f"{spec.capacity.value}, {spec.min_nodes}..{spec.max_nodes} nodes)."
        )
    elif result.action == "updated":
        console.print(
            f"[green]Updated[/] GPU pool {spec.name!r} scaling to "
            f"{spec.min_nodes}..{spec.max_nodes} nodes."
        )


@app.command()
def status(
    cloud: str = CloudOpt,
    cluster: str | None = ClusterOpt,
    region: str | None = RegionOpt,
    resource_group: str | None = ResourceGroupOpt,
    project: str | None = ProjectOpt,
    instance_type: str | None = typer.Option(None, "--instance-type", help="GPU instance type."),
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
    skip_cluster: bool = typer.Option(False, "--skip-cluster", help="Ask only the cloud API."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """The pool as the cloud sees it, and GPU nodes and device plugin pods in the cluster."""
    from llmctl import catalog, kube
    from llmctl.errors import LlmctlError
    from llmctl.manifests import cluster_setup_objects

    if output not in ("table", "json"):
        raise ConfigError(f"--output {output!r} is not supported", hint="use table or json")
    impl, spec, stack = _spec(
        cloud,
        config,
        sets,
        cluster=cluster,
        location=region,
        resource_group=resource_group,
        project=project,
        instance_type=instance_type,
        max_nodes=_reading_max_nodes(),
    )
    pool = impl.read_pool(spec)
    report: dict[str, Any] = {
        "cloud": spec.cloud.value,
        "cluster": spec.cluster,
        "location": spec.location,
        "pool": pool.as_dict() if pool else None,
        # The cluster's side: always this key, null with --skip-cluster (`cluster` stays the name).
        "kubernetes": None,
    }
    if not skip_cluster:
        try:
            api = kube.api_client(
                kubeconfig, context, hint=_kube_hint(impl, spec), skip_flag="--skip-cluster"
            )
            nodes = kube.gpu_nodes(api, spec.gpu_resource)
            where = kube.device_plugin_pods(
                cluster_setup_objects(stack, spec.cloud)
            ) or catalog.MANAGED_DEVICE_PLUGIN_PODS.get(spec.cloud)
            pods = kube.pods_ready(api, *where) if where else None
            report["kubernetes"] = {
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
            }
        except LlmctlError as exc:
            report["kubernetes"] = {"error": exc.format_message()}
    if output == "json":
        typer.echo(json.dumps(report, indent=2))
        return
    _print_status(report, spec)


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
def disable(
    cloud: str = CloudOpt,
    cluster: str | None = ClusterOpt,
    region: str | None = RegionOpt,
    resource_group: str | None = ResourceGroupOpt,
    project: str | None = ProjectOpt,
    instance_type: str | None = typer.Option(None, "--instance-type", help="GPU instance type."),
    scale_to_zero: bool = typer.Option(
        False, "--scale-to-zero", help="Keep the pool, set its maximum and desired size to 0."
    ),
    yes: bool = YesOpt,
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Delete the GPU node pool (or only scale it to zero)."""
    from llmctl.clouds.base import Feature, unsupported_reason

    impl, spec, _ = _spec(
        cloud,
        config,
        sets,
        cluster=cluster,
        location=region,
        resource_group=resource_group,
        project=project,
        instance_type=instance_type,
        max_nodes=_reading_max_nodes(),
    )
    console = _err()
    if impl.read_pool(spec) is None:
        console.print(f"No GPU pool {spec.name!r} in cluster {spec.cluster!r}: nothing to do.")
        return
    what = "scale to zero" if scale_to_zero else "delete"
    if scale_to_zero:
        note = unsupported_reason(spec.cloud, Feature.ZERO_MAX_NODES)
        if note:
            console.print(f"Note: {note}.")
    if not yes:
        confirm(
            f"{what.capitalize()} GPU pool {spec.name!r} in {spec.cloud.value} cluster "
            f"{spec.cluster!r}?"
        )
    with _waiting(f"{what}: pool {spec.name}", spec) as progress:
        impl.disable(spec, scale_to_zero=scale_to_zero, progress=progress)
    done = "Scaled to zero" if scale_to_zero else "Deleted"
    console.print(f"[green]{done}[/] GPU pool {spec.name!r}.")
