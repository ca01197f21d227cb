"""`llmctl model push | fetch`: the model cache in an object store beside each cluster."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmctl.cli import options
from llmctl.errors import ConfigError, LlmctlError

if TYPE_CHECKING:
    from llmctl.config import Stack
    from llmctl.modelstore.locations import StoreLocation
    from llmctl.modelstore.push import PushRequest, PushResult

app = typer.Typer(
    help="Copy models into an object store beside the cluster, and fetch them in the pods.",
    no_args_is_help=True,
)


class CloudChoice(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@app.command("push")
def push(
    model: Annotated[
        str,
        typer.Argument(
            help="A catalog model (llmctl plan --list shows them) or, with --file, any name."
        ),
    ],
    cloud: Annotated[CloudChoice, typer.Option("--cloud", help="aws, azure or gcp.")],
    file: Annotated[
        Path | None,
        typer.Option("--file", dir_okay=False, help="A local GGUF (default: the catalog's URL)."),
    ] = None,
    bucket: Annotated[
        str | None,
        typer.Option("--bucket", help="S3/GCS bucket (default: modelStore.<cloud>.bucket)."),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            "--account", help="Azure storage account (default: modelStore.azure.account)."
        ),
    ] = None,
    container: Annotated[
        str | None,
        typer.Option(
            "--container", help="Azure Blob container (default: modelStore.azure.container)."
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region", help="Where to create the bucket (default: clouds.<cloud>.region)."
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="GCP project (default: clouds.gcp.project).")
    ] = None,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket", help="Create the bucket or container if missing.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite a different file at the same name.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")
    ] = False,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text or json.")
    ] = OutputFormat.TEXT,
    config: Path | None = options.ConfigOption,
    sets: list[str] | None = options.SetOption,
) -> None:
    """Copy a GGUF into the cloud's object store, with its sha256 beside it (idempotent)."""
    from llmctl.modelstore.push import push_model

    stack = options.load(config, sets).stack
    request = push_request(
        stack, model, CloudChoice(cloud), file, bucket, account, container, region, project
    )
    request = _with_flags(request, create_bucket, replace, dry_run)
    from llmctl.cli.console import err_console

    result = push_model(request, log=lambda line: err_console().print(f"[dim]{line}[/dim]"))
    _print_push(result, dry_run, output)


def push_request(
    stack: Stack,
    model: str,
    cloud: CloudChoice,
    file: Path | None,
    bucket: str | None,
    account: str | None,
    container: str | None,
    region: str | None,
    project: str | None,
) -> PushRequest:
    """The push, from the flags and the Stack: which file, where to, which digest it must have."""
    from llmctl import catalog
    from llmctl.catalog import CloudName
    from llmctl.modelstore.locations import LocationError
    from llmctl.modelstore.push import PushRequest

    name = catalog.resolve_model_name(model)
    info = catalog.MODELS.get(name) if name else None
    if info is None and file is None:
        known = ", ".join(catalog.MODELS)
        raise ConfigError(
            f"{model!r} is not a catalog model",
            hint=f"catalog models: {known}; for your own GGUF pass --file PATH",
        )
    cloud_name = CloudName(cloud.value)
    cloud_config = stack.clouds.of(cloud_name)
    try:
        location = _location(
            stack,
            cloud_name,
            model if info is None else info.name,
            bucket,
            account,
            container,
            file.name if file and info is None else None,
            info.filename if info else None,
        )
    except LocationError as exc:
        raise ConfigError(str(exc), hint="names follow the cloud's own rules") from None
    return PushRequest(
        location=location,
        region=region or cloud_config.region,
        project=project or cloud_config.project or os.environ.get("GOOGLE_CLOUD_PROJECT"),
        file=file,
        hub_uri=info.uri if info else None,
        sha256=info.sha256 if info else None,
        size=info.file_bytes if info and info.sha256 else None,
    )


def _location(
    stack: Stack,
    cloud: object,
    model_name: str,
    bucket: str | None,
    account: str | None,
    container: str | None,
    custom_filename: str | None,
    catalog_filename: str | None,
) -> StoreLocation:
    from llmctl.catalog import CloudName
    from llmctl.config import AwsModelStore, AzureModelStore, GcpModelStore
    from llmctl.modelstore.locations import model_location

    assert isinstance(cloud, CloudName)
    filename = catalog_filename or custom_filename or f"{model_name}.gguf"
    configured = stack.model_store.of(cloud)
    if cloud is CloudName.AZURE:
        azure = configured if isinstance(configured, AzureModelStore) else None
        account = account or (azure.account if azure else None)
        container = container or (azure.container if azure else None)
        if not account or not container:
            raise ConfigError(
                "no Azure storage account and container to push to",
                hint="pass --account and --container, or set modelStore.azure in llmctl.yaml",
            )
        return model_location("azure", container, model_name, filename, account=account)
    named = configured if isinstance(configured, AwsModelStore | GcpModelStore) else None
    bucket = bucket or (named.bucket if named else None)
    if not bucket:
        raise ConfigError(
            f"no bucket to push to on {cloud.value}",
            hint=f"pass --bucket, or set modelStore.{cloud.value}.bucket in llmctl.yaml",
        )
    return model_location("s3" if cloud is CloudName.AWS else "gs", bucket, model_name, filename)


def _with_flags(
    request: PushRequest, create_bucket: bool, replace: bool, dry_run: bool
) -> PushRequest:
    from dataclasses import replace as copy

    return copy(request, create_bucket=create_bucket, replace=replace, dry_run=dry_run)


def _print_push(result: PushResult, dry_run: bool, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        typer.echo(
            json.dumps(
                {
                    "uri": result.location.uri,
                    "sha256": result.sha256,
                    "bytes": result.bytes,
                    "changed": result.changed,
                    "dryRun": dry_run,
                    "actions": result.actions,
                },
                indent=2,
            )
        )
        return
    from rich.console import Console

    console = Console()
    lead = "Would " if dry_run else ""
    for action in result.actions:
        console.print(f"{lead}{action}" if dry_run else f"- {action}", highlight=False)
    if not dry_run:
        state = "pushed" if result.changed else "up to date"
        console.print(f"{result.location.uri}: {state}", highlight=False)


@app.command("fetch")
def fetch(
    uri: Annotated[
        str,
        typer.Option("--uri", envvar="MODEL_URI", help="s3://, gs://, azure:// or https:// URL."),
    ],
    path: Annotated[
        Path, typer.Option("--path", envvar="MODEL_PATH", dir_okay=False, help="Where to write it.")
    ],
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            envvar="MODEL_SHA256",
            help="The digest it must have (default: the store's .sha256 beside it).",
        ),
    ] = None,
    connections: Annotated[
        int,
        typer.Option(
            "--connections",
            envvar="MODEL_FETCH_CONNECTIONS",
            min=1,
            max=64,
            help="Parallel ranged GETs.",
        ),
    ] = 16,
    chunk_mib: Annotated[
        int,
        typer.Option(
            "--chunk-mib",
            envvar="MODEL_FETCH_CHUNK_MIB",
            min=1,
            max=1024,
            help="Size of each range, MiB.",
        ),
    ] = 16,
    stall_seconds: Annotated[
        float,
        typer.Option(
            "--stall-seconds",
            envvar="MODEL_FETCH_STALL_SECONDS",
            min=0.5,
            max=600,
            help="Give up a connection that sends nothing this long, and fetch its range again.",
        ),
    ] = 30.0,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            envvar="MODEL_FETCH_METRICS_FILE",
            help="Write the stages as Prometheus metrics here.",
        ),
    ] = None,
) -> None:
    """Fetch a model to local disk with parallel ranged GETs and check its sha256 (what the
    llama pods' init container runs)."""
    from llmctl.modelstore import access, fetch, pod
    from llmctl.modelstore.locations import LocationError

    if sha256 is not None and sha256 == "":
        sha256 = None
    request = pod.PodFetch(
        uri=uri,
        path=path,
        sha256=sha256,
        metrics_file=metrics_file,
        settings=fetch.FetchSettings(
            connections=connections,
            chunk_bytes=chunk_mib * 1024 * 1024,
            stall_timeout=stall_seconds,
        ),
    )
    try:
        pod.run(request, os.environ, log=lambda line: typer.echo(line))
    except (fetch.FetchError, access.AccessError, LocationError) as exc:
        message = f"model fetch failed: {exc}"
        pod.write_termination_message(message)
        raise LlmctlError(message) from None
