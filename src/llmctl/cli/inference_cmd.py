"""`llmctl test-inference`: prove a deployment answers, which tier answered, and how fast."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from llmctl import catalog
from llmctl.catalog import NAMESPACE, CloudName
from llmctl.cli import options
from llmctl.cli.console import err_console, status_spinner
from llmctl.cli.output import to_json
from llmctl.errors import ConfigError, LlmctlError

if TYPE_CHECKING:
    from llmctl.probe.client import Run, Target
    from llmctl.probe.coldstart import ColdStart
    from llmctl.probe.gpu_check import CheckResult


# The router Service the Kustomize overlays create; a Helm release's is <release>-llm-router.
ROUTER_SERVICE = "llm-router"


class ExpectTier(StrEnum):
    GPU = "gpu"
    CPU = "cpu"


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


_err = err_console


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"


def _spread(values: dict[str, float | None]) -> str:
    return " / ".join(_seconds(values[k]) for k in ("p50", "p95", "p99"))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _single_table(data: dict[str, Any]) -> Table:
    result = data["results"][0]
    table = Table(title=f"test-inference: {escape(data['url'])}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    failure = result["failure"]
    if failure is None:
        status = f"[green]{result['status']} OK[/]"
    else:
        code = f" (HTTP {failure['status']})" if failure["status"] else ""
        status = f"[red]failed: {failure['kind']}{code}[/]"
    tokens = result["output_tokens"]
    counted = " (stream chunks)" if result["tokens_counted"] else ""
    rows = [
        ("status", status),
        ("tier", escape(str(result["tier"] or "-"))),
        ("backend", escape(str(result["backend"] or "-"))),
        ("model", escape(str(result["model"] or data["model"]))),
        (
            "time to first token",
            _seconds(result["ttft_s"]) if data["stream"] else "- (--no-stream)",
        ),
        ("total latency", _seconds(result["latency_s"])),
        ("output tokens", "-" if tokens is None else f"{tokens}{counted}"),
        ("tokens/s", _rate(result["tokens_per_s"], "tok/s")),
    ]
    if result["reply"]:
        from llmctl.probe.client import REPLY_PREVIEW_CHARS

        reply = result["reply"].strip()
        if len(reply) > REPLY_PREVIEW_CHARS:
            reply = reply[:REPLY_PREVIEW_CHARS] + "..."
        rows.append(("reply", escape(reply)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _many_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"test-inference: {escape(data['url'])}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    failed = data["failed"]
    rows = [
        (
            "requests",
            f"{data['requests']} ({data['succeeded']} ok, "
            + (f"[red]{failed} failed[/])" if failed else "0 failed)"),
        ),
        ("concurrency", str(data["concurrency"])),
        ("wall time", _seconds(data["wall_s"])),
        ("throughput", _rate(data["throughput_rps"], "req/s")),
        (
            "output tokens/s",
            _rate(data["output_tokens_per_s"], "tok/s") + f" ({data['output_tokens']} tokens)",
        ),
        ("latency p50/p95/p99", _spread(data["latency_s"])),
        (
            "time to first token p50/p95/p99",
            _spread(data["ttft_s"]) if data["stream"] else "- (--no-stream)",
        ),
        ("tiers", escape(_counts(data["tiers"]))),
        ("backends", escape(_counts(data["backends"]))),
        ("errors", escape(_counts(data["errors"])) if data["errors"] else "none"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _run_requests(target: Target, requests: int, concurrency: int, show: bool) -> Run:
    from llmctl.probe import client

    if not show:
        return client.run(target, requests, concurrency)
    if requests == 1:
        # One request can take the whole --timeout (a cold GPU node, a long answer): say so.
        what = f"waiting for {target.model} at {target.url} (timeout {target.timeout_s:g} s)"
        with status_spinner(_err(), what):
            return client.run(target, requests, concurrency)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"{requests} requests, {concurrency} at a time", total=requests)
        failed = [0]

        def advance(result: client.Result) -> None:
            failed[0] += 0 if result.ok else 1
            bar.update(
                task,
                advance=1,
                description=f"{requests} requests, {concurrency} at a time"
                + (f", {failed[0]} failed" if failed[0] else ""),
            )

        return client.run(target, requests, concurrency, on_result=advance)


@contextmanager
def _router_url(
    url: str | None,
    cloud: CloudName | None,
    api: Any,
    show: bool,
    namespace: str = NAMESPACE,
    service: str = ROUTER_SERVICE,
) -> Iterator[str]:
    """The URL to send to: --url as given, or a port-forward to the router Service."""
    from llmctl.probe import client

    if url is not None:
        yield client.normalize_url(url)
        return
    from llmctl.probe import portforward

    target = portforward.router_target(api, namespace, service)
    with portforward.forward(target, portforward.kube_stream(api, target.namespace)) as local:
        if show:
            _err().print(
                f"Forwarding {local} -> pod/{target.pod}:{target.port} "
                f"(service {target.service} in {target.namespace}, cloud {cloud})"
            )
        yield local


def _gpu_check(
    api: Any,
    cloud: CloudName,
    config: Path | None,
    sets: list[str] | None,
    timeout_s: float,
    show: bool,
    namespace: str = NAMESPACE,
) -> CheckResult:
    from llmctl.probe import gpu_check

    stack = options.load(config, sets).stack
    runtime_class = gpu_check.runtime_class_in(api, cloud) or gpu_check.NVIDIA_HANDLER
    pod = gpu_check.check_pod(stack, cloud, namespace=namespace, runtime_class=runtime_class)
    name = pod["metadata"]["name"]
    console = _err()
    with status_spinner(console, f"GPU check pod {name}: creating", show) as describe:
        try:
            return gpu_check.run_check(
                api,
                pod,
                timeout_s=timeout_s,
                on_status=lambda line: describe(f"GPU check pod {name}: " + escape(line)),
            )
        except KeyboardInterrupt:
            console.print(f"[yellow]Interrupted.[/] The GPU check pod {name} was deleted.")
            raise typer.Exit(130) from None


# The Deployment `--cold` scales, per tier, as the Kustomize overlays name it; a Helm release's
# is <release>-<name>.
COLD_DEPLOYMENTS = {ExpectTier.CPU: "cpu-llm-server", ExpectTier.GPU: "gpu-llm-server"}


def _cold_table(cold: ColdStart) -> Table:
    table = Table(
        title=f"cold start: deployment {escape(cold.deployment)} 0 -> 1, "
        f"pod {escape(cold.pod)} on {escape(str(cold.node or '-'))}"
    )
    table.add_column("stage", style="bold")
    table.add_column("seconds", justify="right")
    table.add_column("ended (recorded by)", overflow="fold")
    for stage in cold.stages:
        said = f"{stage.source}" + (f"; {stage.detail}" if stage.detail else "")
        table.add_row(stage.name, f"{stage.seconds:.2f}", escape(said))
    table.add_row("[bold]sum[/]", f"[bold]{cold.sum_s:.2f}[/]", "from the pod's creation")
    if cold.wall_s is not None:
        table.add_row("wall", f"{cold.wall_s:.2f}", "llmctl's clock, from the scale-up request")
    return table


def _cold_start(
    api: Any,
    namespace: str,
    deployment: str,
    target: Target,
    timeout_s: float,
    show: bool,
) -> tuple[ColdStart, Run]:
    """Scale the tier from zero, send the first request once its pod is Ready, time it."""
    from llmctl.probe import client, coldstart

    answered: list[client.Result] = []

    def first_token() -> tuple[float, str]:
        result, at = coldstart.first_answer(target, target.timeout_s)
        answered.append(result)
        return at, coldstart.wall_clock(at)

    console = _err()
    with status_spinner(console, f"cold start of deployment {deployment}", show) as describe:
        try:
            cold = coldstart.measure(
                api,
                namespace,
                deployment,
                first_token,
                timeout_s=timeout_s,
                on_status=lambda line: describe(
                    f"cold start of deployment {deployment}: " + escape(line)
                ),
            )
        except KeyboardInterrupt:
            console.print(
                f"[yellow]Interrupted.[/] Deployment {deployment} is scaled back to its "
                "replica count."
            )
            raise typer.Exit(130) from None
    outcome = client.Run(target, 1, 1, results=answered[-1:])
    outcome.wall_s = answered[-1].latency_s if answered else 0.0
    return cold, outcome


# The GPU check's fields in `--output json`, in this order.
_CHECK_FIELDS = ("pod", "phase", "node", "ok", "deleted", "elapsed_s", "log")


def _check_dict(result: CheckResult) -> dict[str, Any]:
    return {field: getattr(result, field) for field in _CHECK_FIELDS}


def test_inference(
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="LLMCTL_URL",
        help="The router's base URL, e.g. http://127.0.0.1:8080 (env LLMCTL_URL).",
        show_envvar=False,
    ),
    cloud: CloudName | None = typer.Option(
        None,
        "--cloud",
        help="Port-forward to the llm-router Service of this cloud's cluster (kubeconfig); "
        "with --url, only picks the GPU nodes for --gpu-check.",
    ),
    model: str = typer.Option(catalog.GPU_DEFAULT_MODEL, "--model", help="Model to ask for."),
    prompt: str = typer.Option("Explain quantum computing", "--prompt"),
    max_tokens: int = typer.Option(500, "--max-tokens", min=1),
    stream: bool = typer.Option(
        True, "--stream/--no-stream", help="Stream the answer (needed for time to first token)."
    ),
    complexity: str | None = typer.Option(
        None, "--complexity", help="Sent as x-llm-complexity: reasoning, code-generation, chat..."
    ),
    expect_tier: ExpectTier | None = typer.Option(
        None,
        "--expect-tier",
        help="Fail unless this tier answers every request (cpu accepts cpu-fallback).",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar=["LLMCTL_API_KEY", "OPENAI_API_KEY"],
        show_envvar=False,
        help="Bearer key for the router (env LLMCTL_API_KEY, else OPENAI_API_KEY).",
    ),
    requests: int = typer.Option(1, "--requests", "-n", min=1, help="How many requests."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="How many at once."),
    timeout: float = typer.Option(
        120.0, "--timeout", min=0.1, help="Seconds each request may take."
    ),
    output: Output = typer.Option(Output.TEXT, "--output", "-o", help="text or json."),
    gpu_check: bool = typer.Option(
        False,
        "--gpu-check",
        help="First run nvidia-smi in a pod on a GPU node of --cloud, then delete it.",
    ),
    gpu_check_timeout: float = typer.Option(600.0, "--gpu-check-timeout", min=1),
    namespace: str = typer.Option(
        NAMESPACE,
        "--namespace",
        help="Namespace of the router Service and the GPU check pod (a Helm release's own).",
    ),
    service: str = typer.Option(
        ROUTER_SERVICE,
        "--service",
        help="The router Service to port-forward to: a Helm release's is <release>-llm-router.",
    ),
    cold: ExpectTier | None = typer.Option(
        None,
        "--cold",
        help="Scale this tier's Deployment to 0 and back to 1 (needs --cloud), then report each "
        "stage of its pod's start up to the first token.",
    ),
    deployment: str | None = typer.Option(
        None,
        "--deployment",
        help="The Deployment --cold scales (default cpu-llm-server or gpu-llm-server; a Helm "
        "release's is <release>-cpu-llm-server).",
    ),
    cold_timeout: float = typer.Option(
        900.0, "--cold-timeout", min=1, help="Seconds --cold waits for the pod to be Ready."
    ),
    kubeconfig: str | None = typer.Option(
        None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG)."
    ),
    context: str | None = typer.Option(None, "--context", help="Kubeconfig context."),
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Send chat completions to the router and report status, tier, backend and speed.

    Exits 1 when any request fails or --expect-tier does not answer, saying why.
    """
    from llmctl.probe import client

    if url is None and cloud is None:
        raise ConfigError(
            "give --url URL (the router) or --cloud aws|azure|gcp (port-forward to it)",
            hint="e.g. kubectl -n llm-server port-forward svc/llm-router 8080:80, then "
            "--url http://127.0.0.1:8080",
        )
    if gpu_check and cloud is None:
        raise ConfigError("--gpu-check needs --cloud, to pick that cloud's GPU nodes")
    if cold is not None:
        if cloud is None:
            raise ConfigError(
                "--cold needs --cloud, to scale the tier through your kubeconfig",
                hint="e.g. llmctl test-inference --cloud aws --cold cpu --model tinyllama",
            )
        if requests != 1 or concurrency != 1:
            raise ConfigError(
                "--cold times one request, the first after the pod is Ready",
                hint="drop --requests and --concurrency; run them after the cold start",
            )
        if not stream:
            raise ConfigError(
                "--cold measures the time to the first token, which needs streaming",
                hint="drop --no-stream",
            )
    elif deployment is not None:
        raise ConfigError("--deployment names the Deployment --cold scales: give --cold too")
    show = output == Output.TEXT
    api = None
    if cloud is not None and (gpu_check or url is None or cold is not None):
        from llmctl import kube

        api = kube.api_client(kubeconfig, context, skip_flag="")

    check = None
    if gpu_check:
        assert cloud is not None
        check = _gpu_check(api, cloud, config, sets, gpu_check_timeout, show, namespace)
        if show:
            where = f" on node {check.node}" if check.node else ""
            style = "green" if check.ok else "red"
            Console().print(
                Panel(
                    escape(check.log.rstrip() or "(empty log)"),
                    title=f"GPU check pod {check.pod}: [{style}]{check.phase}[/]{escape(where)}",
                )
            )
        if not check.ok:
            if not show:
                typer.echo(to_json({"gpu_check": _check_dict(check), "passed": False}))
            raise LlmctlError(
                f"the GPU check pod ended {check.phase} (pod deleted: {check.deleted})",
                hint="its log above says why; nvidia-smi fails when the node has no NVIDIA "
                "driver or device plugin: `llmctl gpu status --cloud ...`",
            )

    with _router_url(url, cloud, api, show, namespace, service) as base:
        target = client.Target(
            url=base,
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            stream=stream,
            complexity=complexity,
            api_key=api_key or None,
            timeout_s=timeout,
        )
        cold_start = None
        if cold is not None:
            name = deployment or COLD_DEPLOYMENTS[cold]
            cold_start, outcome = _cold_start(api, namespace, name, target, cold_timeout, show)
        else:
            try:
                outcome = _run_requests(target, requests, concurrency, show)
            except KeyboardInterrupt:
                _err().print("[yellow]Interrupted.[/]")
                raise typer.Exit(130) from None
    tier = expect_tier.value if expect_tier else None
    data = client.summary(outcome, tier)
    if cold_start is not None:
        data["cold_start"] = cold_start.as_dict()
    if url is None:
        data["url"] = f"port-forward to service {service} in {namespace} ({cloud})"
    if check is not None:
        data["gpu_check"] = _check_dict(check)
    if show:
        if cold_start is not None:
            Console().print(_cold_table(cold_start))
        Console().print(_single_table(data) if requests == 1 else _many_table(data))
    else:
        typer.echo(to_json(data))
    found = client.problems(outcome, tier)
    if found:
        first = found[0]
        more = "".join(f"\nalso: {p.message}" for p in found[1:])
        raise LlmctlError(first.message + more, hint=first.hint)
    if show:
        tiers = _counts(data["tiers"])
        Console().print(f"[green]PASS[/]: {data['succeeded']} of {requests} answered ({tiers}).")
